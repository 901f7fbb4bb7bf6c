"""A unary call cancelled while its handler awaits (its audit event's write, since the audit
writer) is counted as CANCELLED, not UNKNOWN: load generators cancel the calls in flight when
they stop, and `grpc_code!="OK"` must not count those as failures."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from hsmbridge.grpc.interceptors import MetricsInterceptor
from hsmbridge.metrics import Metrics

METHOD = "/hsmbridge.v1.CryptoService/Wrap"


class Context:
    def code(self) -> Any:
        return None


class Details:
    method = METHOD


def _count(metrics: Metrics, code: str) -> float | None:
    return metrics.registry.get_sample_value(
        "hsmbridge_grpc_server_handled_total",
        {"grpc_service": "hsmbridge.v1.CryptoService", "grpc_method": "Wrap", "grpc_code": code},
    )


@pytest.mark.parametrize(
    ("raised", "code"), [(asyncio.CancelledError, "CANCELLED"), (RuntimeError, "UNKNOWN")]
)
def test_the_code_of_an_interrupted_call(raised: type[BaseException], code: str) -> None:
    async def handler(request: Any, context: Any) -> Any:
        await asyncio.sleep(0)
        raise raised()

    metrics = Metrics()
    interceptor = MetricsInterceptor(metrics)

    async def main() -> None:
        async def continuation(details: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(handler)

        wrapped = await interceptor.intercept_service(continuation, Details())  # type: ignore[arg-type]
        with pytest.raises(raised):
            await wrapped.unary_unary(object(), Context())

    asyncio.run(main())
    assert _count(metrics, code) == 1.0
