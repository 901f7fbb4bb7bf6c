"""RestGateway: answer forwarded HTTP requests with the in-process Key Protect facade.

The standalone REST server (`hsmbridge.rest.gateway_proxy`) forwards each request as one
`Handle` call; here it becomes an ASGI request to the same FastAPI app the daemon serves on its
own REST port, so both topologies share every line of Key Protect semantics. The end user is
authenticated by the facade from the forwarded Authorization header, exactly as on the direct
port; the gRPC channel between proxy and daemon is protected by the transport (unix socket
permissions or mTLS).
"""

from __future__ import annotations

from typing import Any

import grpc

from hsmbridge.v1 import gateway_pb2, gateway_pb2_grpc

MAX_BODY = 1 << 20  # Key Protect bodies are small; anything larger is refused before parsing


async def call_asgi(app: Any, request: gateway_pb2.HttpRequest) -> gateway_pb2.HttpResponse:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method.upper(),
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query,
        "root_path": "",
        "headers": [(h.name.lower().encode("latin-1"), h.value) for h in request.headers],
        "client": (request.client_host or "gateway", request.client_port),
        "server": ("hsmbridge", 0),
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        return {"type": "http.disconnect"}

    response = gateway_pb2.HttpResponse(status=500)
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            for name, value in message.get("headers", []):
                response.headers.add(name=name.decode("latin-1"), value=value)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    response.body = b"".join(chunks)
    return response


class RestGatewayServicer(gateway_pb2_grpc.RestGatewayServicer):
    def __init__(self, app: Any) -> None:
        self._app = app

    async def Handle(
        self, request: gateway_pb2.HttpRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.HttpResponse:
        if len(request.body) > MAX_BODY:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request body too large")
        return await call_asgi(self._app, request)
