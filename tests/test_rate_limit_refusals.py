"""A refused request costs at most one rate-limit token, so no rejected request can lock a tenant
out (issue 15, item 4): a WrapBatch over the 10,000-item cap is refused before its size is
charged, and any admitted call that fails (bad input, unknown key) gets all but one of its tokens
back. On the wire, over gRPC and REST, with the limiter on a hand-moved clock so every count is
exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import grpc
import pytest
from fastapi.testclient import TestClient
from security_support import CALLERS, Stack, Stubs, error_info

from hsmbridge.grpc.errors import MAX_BATCH_ITEMS
from hsmbridge.security.authz import ActionClass
from hsmbridge.security.ratelimit import BucketConfig
from hsmbridge.v1 import crypto_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

C = crypto_pb2
#: 20 at once, one more per 10 s: a lock-out would show as a refused call right after.
BURST = 20


@pytest.fixture(scope="module")
def security_limits() -> Mapping[ActionClass, BucketConfig]:
    return {ActionClass.CRYPTO: BucketConfig(rate=0.1, burst=BURST)}


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    return stack.new_key(name="refusals").id


@pytest.fixture(autouse=True)
def full_buckets(stack: Stack) -> Iterator[None]:
    stack.limiter_clock.advance(3600)
    stack.take_events()
    yield


def wraps_left(stubs: Stubs, key: str) -> int:
    """How many unary Wraps pass before the first RESOURCE_EXHAUSTED (drains the bucket)."""
    for passed in range(BURST + 1):
        try:
            stubs.crypto.Wrap(C.WrapRequest(key_id=key), metadata=CALLERS["writer"].grpc(), timeout=30)
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            return passed
    raise AssertionError("the bucket never ran out")


def test_an_oversized_batch_is_refused_for_one_token(stubs: Stubs, stack: Stack, key: str) -> None:
    items = [C.WrapRequest() for _ in range(MAX_BATCH_ITEMS + 1)]
    for _ in range(3):  # repeating it does not add up either
        with pytest.raises(grpc.RpcError) as info:
            stubs.crypto.WrapBatch(
                C.WrapBatchRequest(key_id=key, items=items), metadata=CALLERS["writer"].grpc(), timeout=60
            )
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(info.value).reason == "INVALID_FIELD"
    assert wraps_left(stubs, key) == BURST - 3
    events = [(e["event"], e["outcome"], e["reason"]) for e in stack.take_events()][:3]
    assert events == [("kms.secrets.wrap", "failure", "INVALID_FIELD")] * 3


def test_a_million_item_batch_does_not_lock_the_tenant_out(stubs: Stubs, key: str) -> None:
    """The issue's case: 1,000,000 items used to put the bucket 18 s into debt."""
    request = C.WrapBatchRequest(key_id=key, items=[C.WrapRequest()] * 1_000_000)
    with pytest.raises(grpc.RpcError) as info:
        stubs.crypto.WrapBatch(request, metadata=CALLERS["writer"].grpc(), timeout=120)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert wraps_left(stubs, key) == BURST - 1


def test_a_stream_message_refused_as_invalid_costs_one_token(stubs: Stubs, key: str) -> None:
    """A stream message with no batch in it is refused as a whole."""

    def messages() -> Iterator[C.CryptoStreamRequest]:
        yield C.CryptoStreamRequest(sequence=1)

    with pytest.raises(grpc.RpcError) as info:
        list(stubs.crypto.CryptoStream(messages(), metadata=CALLERS["writer"].grpc(), timeout=30))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # the stream's admission (1) and its refused message (1)
    assert wraps_left(stubs, key) == BURST - 2


def test_an_oversized_stream_message_costs_one_token(stubs: Stubs, key: str) -> None:
    items = [C.WrapRequest()] * (MAX_BATCH_ITEMS + 1)

    def messages() -> Iterator[C.CryptoStreamRequest]:
        yield C.CryptoStreamRequest(sequence=1, wrap=C.WrapBatchRequest(key_id=key, items=items))

    with pytest.raises(grpc.RpcError) as info:
        list(stubs.crypto.CryptoStream(messages(), metadata=CALLERS["writer"].grpc(), timeout=60))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert wraps_left(stubs, key) == BURST - 2


def test_a_batch_whose_items_fail_is_answered_and_pays_per_item(stubs: Stubs, key: str) -> None:
    """Not a refusal: the batch is answered (every item with its own error status), so it pays."""
    batch = C.UnwrapBatchRequest(
        key_id=key, items=[C.UnwrapRequest(ciphertext=b"not a ciphertext") for _ in range(10)]
    )
    response = stubs.crypto.UnwrapBatch(batch, metadata=CALLERS["writer"].grpc(), timeout=30)
    assert all(r.status.code != 0 for r in response.results)
    assert wraps_left(stubs, key) == BURST - 10


def test_rest_refused_requests_cost_one_token_each(rest: TestClient, key: str) -> None:
    path = f"/api/v2/keys/{key}/actions/wrap"
    headers = CALLERS["writer"].rest()
    for _ in range(5):  # invalid bodies and garbage ciphertexts: refused, one token each
        assert rest.post(path, content=b"{not json", headers=headers).status_code == 400
    unwrap = f"/api/v2/keys/{key}/actions/unwrap"
    assert rest.post(unwrap, json={"ciphertext": "AAAA"}, headers=headers).status_code in (400, 422)
    passed = 0
    while rest.post(path, json={}, headers=headers).status_code == 200:
        passed += 1
        assert passed <= BURST
    assert passed == BURST - 6


def test_the_gate_gives_back_all_but_one_token_of_a_failed_call() -> None:
    """The rule itself, for any call the gate admitted with a cost and that then raised."""
    from security_support import ManualClock

    from hsmbridge.errors import InvalidInput, NotFound
    from hsmbridge.security.authz import Authorizer, AuthzConfig, rest_action
    from hsmbridge.security.dev import full_rights
    from hsmbridge.security.gate import SecurityGate
    from hsmbridge.security.ratelimit import RateLimiter

    clock = ManualClock()
    limiter = RateLimiter({ActionClass.CRYPTO: BucketConfig(rate=0.1, burst=BURST)}, clock=clock)
    gate = SecurityGate(Authorizer(AuthzConfig()), limiter=limiter)
    identity = full_rights("svc-writer")
    action = rest_action("POST", "/api/v2/keys/k/actions/wrap", None)
    assert action is not None
    for error in (InvalidInput("refused"), NotFound("gone")):
        admitted = gate.call(action, lambda: identity, "inst", transport="grpc", cost=15)
        with pytest.raises(type(error)), admitted:
            raise error
    assert limiter.take("inst", ActionClass.CRYPTO, BURST - 2) == 0.0  # 2 spent, not 30
    assert limiter.take("inst", ActionClass.CRYPTO, 1) > 0
