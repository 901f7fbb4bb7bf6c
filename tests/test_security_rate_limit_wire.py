"""Rate limiting on the wire: REST answers 429 with ``Retry-After`` and Key Protect's body, gRPC
RESOURCE_EXHAUSTED with ``retry_after`` in the ErrorInfo metadata; batches and stream messages
cost one token per item; one limiter per process is shared by both transports; buckets are per
instance and per action class; a refused call is audited as RATE_LIMITED.

The limiter runs on a hand-moved clock (`ManualClock`): time passes only when a test says so, so
every count below is exact and nothing depends on how fast the machine is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import grpc
import pytest
from fastapi.testclient import TestClient
from security_support import CALLERS, INSTANCE_A, INSTANCE_B, Stack, Stubs, error_info

from hsmbridge.security.authz import ActionClass
from hsmbridge.security.ratelimit import BucketConfig
from hsmbridge.v1 import crypto_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

C = crypto_pb2
#: A token every 2 s, 5 at once: one more call than the burst waits exactly 2 s.
CRYPTO = BucketConfig(rate=0.5, burst=5)
TOO_MANY = {
    "metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},
    "resources": [{"errorMsg": "Too Many Requests: Wait a few minutes and try again."}],
}


@pytest.fixture(scope="module")
def security_limits() -> Mapping[ActionClass, BucketConfig]:
    return {ActionClass.CRYPTO: CRYPTO, ActionClass.READ: BucketConfig(rate=0.5, burst=3)}


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    return {"a": stack.new_key(name="limited").id, "b": stack.new_key(INSTANCE_B, name="limited").id}


@pytest.fixture(autouse=True)
def full_buckets(stack: Stack) -> Iterator[None]:
    """Every test starts with full buckets: an hour passes between tests."""
    stack.limiter_clock.advance(3600)
    stack.take_events()
    yield


def rest_wrap(rest: TestClient, key: str, caller: str = "writer", **headers: str) -> int:
    response = rest.post(f"/api/v2/keys/{key}/actions/wrap", json={}, headers=CALLERS[caller].rest(**headers))
    return response.status_code


def grpc_wrap(stubs: Stubs, key: str, caller: str = "writer") -> None:
    stubs.crypto.Wrap(C.WrapRequest(key_id=key), metadata=CALLERS[caller].grpc(), timeout=30)


def exhausted(call: object, *args: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    return info.value


def test_rest_429_with_retry_after_and_key_protects_body(
    rest: TestClient, stack: Stack, keys: dict[str, str]
) -> None:
    assert [rest_wrap(rest, keys["a"]) for _ in range(5)] == [200] * 5
    stack.take_events()
    refused = rest.post(
        f"/api/v2/keys/{keys['a']}/actions/wrap",
        json={},
        headers=CALLERS["writer"].rest(correlation_id="rl-1"),
    )
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.headers["correlation-id"] == "rl-1"
    assert refused.json() == TOO_MANY
    (event,) = stack.take_events()
    assert (event["event"], event["outcome"], event["reason"], event["correlation_id"]) == (
        "kms.secrets.wrap",
        "failure",
        "RATE_LIMITED",
        "rl-1",
    )
    # other instances and other classes keep their own buckets
    assert rest_wrap(rest, keys["b"], "manager_b") == 200
    assert rest.get("/api/v2/keys", headers=CALLERS["writer"].rest()).status_code == 200
    # a refused call spent nothing: after the advertised wait exactly one more call passes
    stack.limiter_clock.advance(2)
    assert [rest_wrap(rest, keys["a"]) for _ in range(2)] == [200, 429]


def test_a_rate_limit_is_decided_after_authentication(
    rest: TestClient, stack: Stack, keys: dict[str, str]
) -> None:
    """An exhausted bucket is no oracle for callers who may not use the instance: 401, not 429."""
    assert [rest_wrap(rest, keys["a"]) for _ in range(6)] == [200] * 5 + [429]
    path = f"/api/v2/keys/{keys['a']}/actions/wrap"
    assert rest.post(path, json={}, headers={"bluemix-instance": INSTANCE_A}).status_code == 401
    assert rest.post(path, json={}, headers=CALLERS["manager_b"].rest(instance=INSTANCE_A)).status_code == 401


def test_grpc_resource_exhausted_with_retry_after_in_error_info(
    stubs: Stubs, stack: Stack, keys: dict[str, str]
) -> None:
    for _ in range(5):
        grpc_wrap(stubs, keys["a"])
    stack.take_events()
    err = exhausted(grpc_wrap, stubs, keys["a"])
    info = error_info(err)
    assert (info.reason, info.metadata["retry_after"]) == ("RATE_LIMITED", "2")
    (event,) = stack.take_events()
    assert (event["event"], event["reason"], event["transport"]) == (
        "kms.secrets.wrap",
        "RATE_LIMITED",
        "grpc",
    )
    grpc_wrap(stubs, keys["b"], "manager_b")  # instance B is not affected


def test_one_limiter_serves_both_transports(
    rest: TestClient, stubs: Stubs, stack: Stack, keys: dict[str, str]
) -> None:
    assert [rest_wrap(rest, keys["a"]) for _ in range(3)] == [200] * 3
    grpc_wrap(stubs, keys["a"])
    grpc_wrap(stubs, keys["a"])
    assert rest_wrap(rest, keys["a"]) == 429
    exhausted(grpc_wrap, stubs, keys["a"])


def test_batches_cost_one_token_per_item(stubs: Stubs, stack: Stack, keys: dict[str, str]) -> None:
    metadata = CALLERS["writer"].grpc()

    def batch(n: int) -> C.WrapBatchResponse:
        request = C.WrapBatchRequest(key_id=keys["a"], items=[C.WrapRequest() for _ in range(n)])
        return stubs.crypto.WrapBatch(request, metadata=metadata, timeout=30)

    assert len(batch(3).results) == 3  # 5 → 2 tokens
    err = exhausted(batch, 3)  # needs 3, has 2: refused whole, nothing spent
    assert error_info(err).metadata["retry_after"] == "2"
    grpc_wrap(stubs, keys["a"])  # 2 → 1
    grpc_wrap(stubs, keys["a"])  # 1 → 0
    exhausted(grpc_wrap, stubs, keys["a"])


def test_a_batch_larger_than_the_burst_passes_once_into_debt(stubs: Stubs, keys: dict[str, str]) -> None:
    request = C.WrapBatchRequest(key_id=keys["a"], items=[C.WrapRequest() for _ in range(8)])
    assert len(stubs.crypto.WrapBatch(request, metadata=CALLERS["writer"].grpc(), timeout=30).results) == 8
    # 5 - 8 = -3 tokens: one more call waits for 4 tokens, 8 s
    assert error_info(exhausted(grpc_wrap, stubs, keys["a"])).metadata["retry_after"] == "8"


def test_stream_messages_cost_their_items(stubs: Stubs, stack: Stack, keys: dict[str, str]) -> None:
    def messages() -> Iterator[C.CryptoStreamRequest]:
        for sequence in (1, 2):
            items = [C.WrapRequest() for _ in range(3)]
            yield C.CryptoStreamRequest(
                sequence=sequence, wrap=C.WrapBatchRequest(key_id=keys["a"], items=items)
            )

    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in stubs.crypto.CryptoStream(messages(), metadata=CALLERS["writer"].grpc(), timeout=30):
            received.append(response.sequence)
    assert received == [1]
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # opening the stream is one admission (1 token), then 3 per message: 5 - 1 - 3 = 1 left, the
    # second message is 2 tokens short, 4 s
    assert error_info(info.value).metadata["retry_after"] == "4"
    events = [(e["event"], e["outcome"], e["reason"]) for e in stack.take_events()]
    assert events == [
        ("kms.secrets.wrap", "success", None),
        ("kms.secrets.wrap", "failure", "RATE_LIMITED"),
        ("kms.secrets.unwrap", "failure", "RATE_LIMITED"),  # the stream itself, under its opening action
    ]
