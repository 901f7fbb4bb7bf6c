"""An HSM group whose members are two different PKCS#11 implementations: a SoftHSM2 token and an
NSS softoken database, holding one master KEK.

Real groups are one vendor's, but what this proves matters to them too: the stored format is the
same bytes whatever module computes it (RFC 5649, which SoftHSM2 computes under
CKM_AES_KEY_WRAP_PAD and NSS under CKM_AES_KEY_WRAP_KWP, the probe finding which), so the key
check values agree and material wrapped on one member unwraps on the other; and two modules with
their own initialisation, sessions and handle caches fail over without a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace

import pytest
from test_failover import fail_over_under_load

from hsmbridge.core.backend import KeyRef, MaterialKind
from hsmbridge.hsm.backend import Pkcs11Backend, Pkcs11Settings
from hsmbridge.hsm.group import Pkcs11Group, import_shared_kek, kek_check_value

pytestmark = pytest.mark.softhsm
pytest_plugins = ("failover_fixtures",)


@pytest.fixture(scope="module")
def vendor_members(
    group_members: list[Pkcs11Settings], nss_token: dict[str, str]
) -> Iterator[list[Pkcs11Settings]]:
    """SoftHSM2's `failover-a` and the NSS session database, with a KEK of their own."""
    label = f"vendors-kek-{uuid.uuid4().hex[:8]}"
    softhsm = replace(group_members[0], kek_label=label)
    nss = Pkcs11Settings(
        module=nss_token["module"],
        init_args=nss_token["init_args"],
        pin=nss_token["pin"],
        token_label=nss_token["label"],
        kek_label=label,
        pool_size=4,
        cache_size=64,
    )
    members = [softhsm, nss]
    assert import_shared_kek(members)
    yield members


def test_both_vendors_hold_one_kek_and_agree_on_its_check_value(vendor_members: list[Pkcs11Settings]) -> None:
    softhsm, nss = (Pkcs11Backend(s) for s in vendor_members)
    try:
        assert not softhsm.capabilities().aes_key_wrap_kwp and nss.capabilities().aes_key_wrap_kwp
        assert kek_check_value(softhsm) == kek_check_value(nss)
        for source, target in ((softhsm, nss), (nss, softhsm)):
            for kind, length in ((MaterialKind.AES, 32), (MaterialKind.AES, 16), (MaterialKind.SECRET, 24)):
                wrapped = source.generate_key(kind, length)
                assert len(wrapped.blob) == length + 8  # RFC 5649, not RFC 3394 over PKCS#7
                if kind is MaterialKind.SECRET:
                    assert target.reveal_secret(wrapped) == source.reveal_secret(wrapped)
                    continue
                ref = KeyRef(f"vendors-{uuid.uuid4().hex}", wrapped)
                iv, ct = source.gcm_encrypt(ref, b"across vendors", b"aad")
                assert bytes(target.gcm_decrypt(ref, iv, ct, b"aad")) == b"across vendors"
    finally:
        softhsm.close()
        nss.close()


def test_the_nss_member_takes_over_within_a_second_and_softhsm_is_taken_back(
    vendor_members: list[Pkcs11Settings], token_outage: Callable[[str], AbstractContextManager[None]]
) -> None:
    group = Pkcs11Group(vendor_members, health_interval=0.1, recovery_interval=0.5)
    try:
        fail_over_under_load(group, token_outage, threads=3, keys=6, calls=100).check(threads=3)
    finally:
        group.close()
