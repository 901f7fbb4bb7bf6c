"""The batch path's shortcuts build exactly what the unary path builds: the AAD as prefix + encoded
list, envelopes as header + IV + ciphertext, and OK items with no status copied in."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsmbridge.core.envelope import (
    Envelope,
    associated_data,
    associated_data_prefix,
    encoded_aad,
    envelope_header,
)
from hsmbridge.core.envelopes import WrapResult
from hsmbridge.errors import InternalError, InvalidInput
from hsmbridge.grpc.crypto import wrap_batch_response


@given(
    tenant=st.text(min_size=1, max_size=40),
    aad=st.lists(st.text(max_size=20), max_size=5),
)
def test_prefix_plus_encoded_aad_is_the_associated_data(tenant: str, aad: list[str]) -> None:
    key_id, version_id = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        whole = associated_data(tenant=tenant, key_id=key_id, key_version_id=version_id, aad=aad)
    except InvalidInput:
        return  # unencodable text: both paths refuse it (checked below for the AAD)
    prefix = associated_data_prefix(tenant=tenant, key_id=key_id, key_version_id=version_id)
    assert prefix + encoded_aad(aad) == whole


def test_encoded_aad_validates_as_associated_data_does() -> None:
    for bad in ("not-a-list", ["x" * 256], ["ok"] * 101, ["\ud800"]):
        with pytest.raises(InvalidInput):
            encoded_aad(bad)  # type: ignore[arg-type]


def test_the_envelope_header_starts_every_envelope_of_a_version() -> None:
    version_id = str(uuid.uuid4())
    iv, ciphertext = os.urandom(12), os.urandom(48)
    assert envelope_header(version_id) + iv + ciphertext == Envelope(version_id, iv, ciphertext).to_bytes()
    with pytest.raises(InternalError):
        envelope_header("not-a-uuid")


def test_ok_items_carry_no_status_and_read_as_ok() -> None:
    response = wrap_batch_response(
        [WrapResult(b"c" * 45, str(uuid.uuid4())), InvalidInput("bad", target="aad")]
    )
    ok, bad = response.results
    assert not ok.HasField("status") and ok.status.code == 0
    assert bad.HasField("status") and bad.status.code != 0
