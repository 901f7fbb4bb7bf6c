"""Fixtures for the cloud-push tests; a test module loads them with

    pytest_plugins = ("push_fixtures",)

`source` is the hsmbridge that pushes: the real FastAPI app in-process over the session's
SoftHSM2 token, a fresh store and the system clock (expiry is checked against real time). Its
push services count every cloud client they build (`source.clients`), so a test can prove that a
refusal happened before any cloud call. `dev_daemon` starts another hsmbridge as `hsmbridge dev`
in a fresh directory: its own SoftHSM2 token, master KEK and store, as a second site would have.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import Daemon
from push_support import TOKEN, CountingClients, Source
from services import new_store

from hsmbridge.core.clock import SystemClock
from hsmbridge.core.services import Services
from hsmbridge.push.service import build
from hsmbridge.rest.app import create_app
from hsmbridge.rest.context import StaticTokenAuthenticator
from hsmbridge.rest.representation import RenderContext


@pytest.fixture(scope="module")
def source(hsm_backend: object) -> Iterator[Source]:
    services = Services.build(new_store(), hsm_backend, clock=SystemClock())  # type: ignore[arg-type]
    app = create_app(
        services, StaticTokenAuthenticator({TOKEN: "IBMid-pusher"}), RenderContext("local", "test")
    )
    clients = CountingClients()
    app.state.hsmbridge_push = build(services, clients=clients)
    with Source(app) as client:
        client.services = services
        client.instance = str(uuid.uuid4())
        client.clients = clients
        yield client
    services.store.close()


@pytest.fixture(scope="module")
def dev_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A second hsmbridge (`hsmbridge dev`): own SoftHSM2 token, KEK and store."""
    workdir: Path = tmp_path_factory.mktemp("push-target")
    daemon = Daemon(None, workdir, args=("dev",))
    daemon.start(timeout=120)
    yield daemon
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.stop()
