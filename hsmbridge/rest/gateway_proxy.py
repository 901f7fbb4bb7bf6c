"""The standalone Key Protect REST server: forwards every request to a daemon over gRPC.

    python -m hsmbridge.rest.gateway_proxy --daemon unix:/run/hsmbridge/grpc.sock --listen 127.0.0.1:8080

Why a forwarder and not a second implementation: the facade's semantics (lifecycle, reason
codes, envelopes) then exist once, in the daemon that owns the HSM, and this process holds no key
material, no store and no HSM session — it can run in another container or on another host. The
daemon is reached over TCP or a unix socket (`unix:/path`), with TLS/mTLS channel credentials
when given. When the daemon cannot be reached the client gets Key Protect's 503 body, not a hang.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc

from hsmbridge.v1 import gateway_pb2, gateway_pb2_grpc

_UNAVAILABLE = json.dumps(
    {
        "metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},
        "resources": [
            {
                "errorMsg": "Service Unavailable: IBM Key Protect is currently unavailable. "
                "Your request could not be processed. Try again later."
            }
        ],
    }
).encode()
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"upgrade",
    b"te",
    b"trailer",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"content-length",
    b"host",
}


class GatewayProxy:
    """A raw ASGI application: no framework, so nothing is parsed or re-encoded on the way."""

    def __init__(
        self, daemon: str, *, credentials: grpc.ChannelCredentials | None = None, timeout: float = 30.0
    ) -> None:
        self._target = daemon
        self._credentials = credentials
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: gateway_pb2_grpc.RestGatewayStub | None = None

    def _connect(self) -> gateway_pb2_grpc.RestGatewayStub:
        if self._stub is None:
            self._channel = (
                grpc.aio.secure_channel(self._target, self._credentials)
                if self._credentials
                else grpc.aio.insecure_channel(self._target)
            )
            self._stub = gateway_pb2_grpc.RestGatewayStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        client = scope.get("client") or ("", 0)
        request = gateway_pb2.HttpRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            headers=[
                gateway_pb2.HttpHeader(name=n.decode("latin-1"), value=v)
                for n, v in scope.get("headers", [])
                if n.lower() not in _HOP_BY_HOP
            ],
            body=bytes(body),
            client_host=client[0] or "",
            client_port=client[1] or 0,
        )
        try:
            response = await self._connect().Handle(request, timeout=self._timeout)
        except grpc.aio.AioRpcError:
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": _UNAVAILABLE})
            return
        headers = [
            (h.name.encode("latin-1"), h.value)
            for h in response.headers
            if h.name.encode("latin-1").lower() not in _HOP_BY_HOP
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


async def _keyprotect_refusal(scope: dict[str, Any], error: Any) -> Any:
    """Key Protect's body for a request this process refuses itself (the daemon never sees it)."""
    from starlette.responses import JSONResponse

    from hsmbridge.rest.errors import Operation, to_http_error

    http = to_http_error(error, Operation("Request", "processed"))
    return JSONResponse(http.body, status_code=http.status)


def guarded(proxy: GatewayProxy, max_body_bytes: int | None = None) -> Any:
    """`proxy` behind the same body limit as the daemon's facade: this process buffers a body
    before forwarding it, so without one a single upload could take all its memory."""
    from hsmbridge.rest.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
    from hsmbridge.rest.shapes import ErrorShapes

    return BodyLimit(proxy, ErrorShapes(_keyprotect_refusal), max_body_bytes or DEFAULT_MAX_BODY_BYTES)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from hsmbridge.config import RestConfig
    from hsmbridge.rest.limits import apply_to_uvicorn

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--daemon", required=True, help="the daemon's gRPC address: host:port or unix:/path")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="REST address to serve on")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    print(f"hsmbridge: REST gateway on http://{host}:{port} forwarding to {args.daemon}", flush=True)
    limits = RestConfig()  # the daemon's defaults: body size, header and idle timeouts, connections
    config = uvicorn.Config(
        guarded(GatewayProxy(args.daemon), limits.max_body_bytes),
        host=host,
        port=int(port),
        log_level="warning",
    )
    apply_to_uvicorn(
        config,
        header_timeout=limits.header_timeout,
        idle_timeout=limits.idle_timeout,
        max_connections=limits.max_connections,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
