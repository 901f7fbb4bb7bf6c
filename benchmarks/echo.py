"""A bare gRPC echo served the way the daemon serves: a `grpc.aio` server with SO_REUSEPORT and the
same metrics interceptor, one async unary handler on the event loop that answers a `WrapRequest`
with a `WrapResponse` carrying the plaintext back. No HSM, no store, no authentication: the floor
a unary Wrap is compared with (target: Wrap ≥ 0.8× this). It runs on the daemon's event loop
(`hsmbridge.daemon.run`: uvloop when installed), so both sides of the ratio pay the same loop.

    python -m benchmarks.echo        prints "echo listening on 127.0.0.1:PORT", serves until SIGTERM
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc

from hsmbridge.grpc.interceptors import MetricsInterceptor
from hsmbridge.metrics import Metrics
from hsmbridge.v1 import crypto_pb2

METHOD = "/hsmbridge.bench.Echo/Echo"


async def echo(request: crypto_pb2.WrapRequest, context: grpc.aio.ServicerContext) -> crypto_pb2.WrapResponse:
    return crypto_pb2.WrapResponse(ciphertext=request.plaintext, key_version_id=request.key_id)


async def main() -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)], interceptors=[MetricsInterceptor(Metrics())])
    handler = grpc.unary_unary_rpc_method_handler(
        echo,
        request_deserializer=crypto_pb2.WrapRequest.FromString,
        response_serializer=crypto_pb2.WrapResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("hsmbridge.bench.Echo", {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    from hsmbridge.daemon import run

    run(main())
    sys.exit(0)
