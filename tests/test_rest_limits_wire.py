"""REST connection limits on a real uvicorn server, with each HTTP protocol uvicorn may use (h11,
and httptools where installed): a slow or silent client is closed after the header timeout, an
idle keep-alive connection after the idle timeout, requests over the connection cap get 503, and
a 400 MB body is refused after the limit without being read (issue 15, item 6)."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from security_support import CALLERS, RENDER, Stack

from hsmbridge.rest.app import create_app
from hsmbridge.rest.limits import apply_to_uvicorn

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.0
MAX_CONNECTIONS = 40
LIMIT = 256 * 1024
PROTOCOLS = [
    "h11",
    pytest.param(
        "httptools",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("httptools") is None, reason="httptools not installed"
        ),
    ),
]


class Served:
    def __init__(self, app: Any, protocol: str) -> None:
        config = uvicorn.Config(app, http=protocol, log_config=None, lifespan="off", loop="asyncio")
        apply_to_uvicorn(
            config, header_timeout=HEADER_TIMEOUT, idle_timeout=IDLE_TIMEOUT, max_connections=MAX_CONNECTIONS
        )
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])))
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module", params=PROTOCOLS)
def served(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Served]:
    app = create_app(stack.services, stack.authenticator, RENDER, gate=stack.gate, max_body_bytes=LIMIT)
    s = Served(app, request.param)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    return stack.new_key(name="limits").id


def request_bytes(path: str, *, body: bytes = b"", extra: str = "", caller: str = "writer") -> bytes:
    headers = "".join(f"{k}: {v}\r\n" for k, v in CALLERS[caller].rest().items())
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\n{headers}content-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_response(conn: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data


def closed_by_server(conn: socket.socket, within: float) -> bool:
    conn.settimeout(within)
    try:
        while True:
            if not conn.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_silent_and_slow_clients_are_closed_after_the_header_timeout(served: Served, key: str) -> None:
    silent = [served.connect() for _ in range(10)]
    slow = [served.connect() for _ in range(10)]
    for conn in slow:
        conn.sendall(b"POST /api/v2/keys HTTP/1.1\r\nhost: x\r\n")  # and never the rest
    started = time.monotonic()
    assert all(closed_by_server(c, within=HEADER_TIMEOUT + 20) for c in silent + slow)
    assert time.monotonic() - started < HEADER_TIMEOUT + 20
    # a client that keeps sending a byte at a time is closed too: the deadline is for the whole head
    trickle = served.connect()
    head = request_bytes(f"/api/v2/keys/{key}/actions/wrap", body=b"{}")
    for byte in head[:40]:
        try:
            trickle.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.05)
    assert closed_by_server(trickle, within=HEADER_TIMEOUT + 20)
    for conn in (*silent, *slow, trickle):
        conn.close()


def test_a_prompt_client_is_served_and_an_idle_one_closed_after_the_idle_timeout(
    served: Served, key: str
) -> None:
    with served.connect() as conn:
        for _ in range(3):  # keep-alive works
            conn.sendall(request_bytes(f"/api/v2/keys/{key}/actions/wrap", body=b"{}"))
            status, _ = read_response(conn)
            assert status == 200
        assert closed_by_server(conn, within=IDLE_TIMEOUT + 20)


def test_requests_over_the_connection_cap_get_503(served: Served, key: str) -> None:
    held = [served.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # let the server accept them (not a synchronisation: the cap is what is tested)
        with served.connect() as extra:
            extra.sendall(request_bytes(f"/api/v2/keys/{key}/actions/wrap", body=b"{}"))
            status, _ = read_response(extra)
        assert status == 503
    finally:
        for conn in held:
            conn.close()
    # once they are gone, service is back
    deadline = time.monotonic() + 30
    while True:
        with served.connect() as conn:
            conn.sendall(request_bytes(f"/api/v2/keys/{key}/actions/wrap", body=b"{}"))
            if read_response(conn)[0] == 200:
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_400_mb_declared_body_is_refused_before_it_is_read(served: Served, key: str) -> None:
    with served.connect() as conn:
        head = request_bytes(f"/api/v2/keys/{key}/actions/wrap")
        head = head.replace(b"content-length: 0", b"content-length: 400000000")
        conn.sendall(head + b'{"plaintext": "')
        status, data = read_response(conn)
        assert status == 413, data
        assert b"content-type: application/json" in data.lower()
        assert b"connection: close" in data.lower()
        # the server closes instead of reading the other 399.99 MB: sending them fails
        sent = 0
        with pytest.raises(OSError):
            while sent < 400_000_000:
                conn.sendall(b"A" * 1048576)
                sent += 1048576
        assert sent < 50_000_000


def test_a_chunked_400_mb_body_is_cut_off_at_the_limit(served: Served, key: str) -> None:
    with served.connect() as conn:
        headers = "".join(f"{k}: {v}\r\n" for k, v in CALLERS["writer"].rest().items())
        conn.sendall(
            f"POST /api/v2/keys/{key}/actions/wrap HTTP/1.1\r\nhost: x\r\n{headers}"
            "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n%s\r\n" % (65536, b"A" * 65536)
        sent = 0
        conn.settimeout(30)
        try:
            while sent < 400_000_000:
                conn.sendall(chunk)
                sent += 65536
                if sent > 64 * LIMIT:  # far past the limit: the server has answered by now
                    break
        except OSError:
            pass
        status, _ = read_response(conn)
        assert status == 413
        assert sent < 400_000_000
