"""Malformed gRPC messages get INVALID_ARGUMENT and one log line without a traceback; the message
size limits are set on the server and on the project's client (issue 15, item 8)."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from security_support import CALLERS, GrpcServer, Stack, Stubs, error_info

from hsmbridge.client import Client
from hsmbridge.grpc.limits import MAX_MESSAGE_BYTES
from hsmbridge.v1 import crypto_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

C = crypto_pb2
GARBAGE = b"\xff\xff\xff\xff"  # a field tag with no end: protobuf refuses it


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    return stack.new_key(name="malformed").id


def raw(channel: grpc.Channel, method: str, *, stream: bool = False) -> object:
    if stream:
        return channel.stream_stream(method, request_serializer=None, response_deserializer=None)
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "method",
    [
        "/hsmbridge.v1.CryptoService/Wrap",
        "/hsmbridge.v1.CryptoService/WrapBatch",
        "/hsmbridge.v1.KeyService/GetKey",
    ],
)
def test_a_malformed_unary_request_is_invalid_argument(
    stubs: Stubs, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.RpcError) as info:
        raw(stubs.channel, method)(GARBAGE, metadata=CALLERS["writer"].grpc(), timeout=30)  # type: ignore[operator]
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(info.value).reason == "BAD_BODY"
    assert "DecodeError" not in (info.value.details() or "")
    no_tracebacks(caplog)
    assert f"malformed request message on {method}" in caplog.text


def test_a_malformed_stream_message_is_invalid_argument_and_audited(
    stubs: Stubs, stack: Stack, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack.take_events()
    good = C.CryptoStreamRequest(sequence=1, wrap=C.WrapBatchRequest(key_id=key, items=[C.WrapRequest()]))
    call = raw(stubs.channel, "/hsmbridge.v1.CryptoService/CryptoStream", stream=True)
    answers = []
    with pytest.raises(grpc.RpcError) as info:
        for answer in call(  # type: ignore[operator]
            iter([good.SerializeToString(), GARBAGE]), metadata=CALLERS["writer"].grpc(), timeout=30
        ):
            answers.append(C.CryptoStreamResponse.FromString(answer).sequence)
    assert answers == [1]
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    no_tracebacks(caplog)
    events = [(e["event"], e["outcome"], e["reason"]) for e in stack.take_events()]
    assert events[-1] == ("kms.secrets.unwrap", "failure", "BAD_BODY")  # the stream, under its opening action


def test_health_and_reflection_still_work_through_the_interceptor(grpc_server: GrpcServer) -> None:
    with grpc_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(
            reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
        names = {s.name for s in answers[0].list_services_response.service}
        assert "hsmbridge.v1.CryptoService" in names


def test_a_batch_above_grpcs_default_4_mib_passes_with_the_projects_client(
    grpc_server: GrpcServer, key: str
) -> None:
    client = Client(grpc_server.target, CALLERS["writer"].instance, token=CALLERS["writer"].token)
    try:
        items = [C.WrapRequest(plaintext=bytes([i % 251]) * 7000) for i in range(800)]  # ≈ 5.6 MB
        request = C.WrapBatchRequest(key_id=key, items=items)
        assert request.ByteSize() > 4 * 1024 * 1024
        response = client.crypto.WrapBatch(request, metadata=CALLERS["writer"].grpc(), timeout=120)
        assert [r.status.code for r in response.results] == [0] * len(items)
    finally:
        client.close()


def test_a_message_above_the_limit_is_refused_before_it_is_parsed(grpc_server: GrpcServer) -> None:
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES + 1024)]
    with grpc.insecure_channel(grpc_server.target, options=options) as channel:
        with pytest.raises(grpc.RpcError) as info:
            raw(channel, "/hsmbridge.v1.CryptoService/WrapBatch")(  # type: ignore[operator]
                b"\x00" * (MAX_MESSAGE_BYTES + 1), metadata=CALLERS["writer"].grpc(), timeout=60
            )
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
