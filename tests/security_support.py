"""The security wire tests' shared parts (not a plugin; the fixtures are in `security_fixtures`).

Everything runs over the real session-wide SoftHSM2 backend, a fresh SQLite store and a
`FixedClock`, behind the *production* security stack: `security.authn.Authenticator` with
`StaticTokens` (digests only), `SecurityGate` with the standard role table, an `AuditLog` writing
to a `MemorySink`, and (optionally) a `RateLimiter` on a hand-moved clock.

Callers (`CALLERS`): one static token per role scoped to instance A — ``reader``,
``reader_plus``, ``writer``, ``manager``, ``purger`` (Manager + KeyPurge) — and ``manager_b``
and ``purger_b``, the same for instance B. Tokens are random per test session
(`generate_token`), so the leak scan looks for values nobody could have hard-coded.

`GrpcServer` runs the real `build_server` services on 127.0.0.1:0 in a grpc.aio server on an
event loop of its own in a background thread, so tests use ordinary synchronous stubs.

Why a separate module: test modules import these names, and a module imported before pytest
loads it as a plugin cannot have its asserts rewritten (PytestAssertRewriteWarning).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_status import rpc_status
from services import build_services, clock_of

from hsmbridge.core.clock import FixedClock
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import Key
from hsmbridge.core.principal import CallContext, Principal
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import KeyQuery, RegistrationQuery
from hsmbridge.grpc.server import build_server, mark_serving
from hsmbridge.rest.representation import RenderContext
from hsmbridge.security.audit import AuditLog, MemorySink
from hsmbridge.security.authn import Authenticator
from hsmbridge.security.authz import ActionClass, Authorizer, AuthzConfig
from hsmbridge.security.gate import SecurityGate
from hsmbridge.security.principals import Role
from hsmbridge.security.ratelimit import BucketConfig, RateLimiter
from hsmbridge.security.tokens import StaticTokenConfig, StaticTokens, generate_token, hash_token
from hsmbridge.v1 import (
    crypto_pb2_grpc,
    hsm_pb2_grpc,
    import_tokens_pb2_grpc,
    keys_pb2_grpc,
    push_pb2_grpc,
)

INSTANCE_A = "instance-a-3f1c"
INSTANCE_B = "instance-b-77d0"
RENDER = RenderContext(region="us-south", account="0123456789abcdef0123456789abcdef")
UNAUTHORIZED = "Unauthorized: The user does not have access to the specified resource."
ERROR_TYPE = "application/vnd.ibm.kms.error+json"
KEY_TYPE = "application/vnd.ibm.kms.key+json"
#: Import keypairs are 2048 bits here instead of the default 4096 (≈3 s of SoftHSM2 keygen each,
#: ≈1 s at 2048); the key size plays no part in any security decision tested here.
IMPORT_KEY_BITS = 2048


# --- callers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    name: str
    principal: str
    instance: str
    roles: tuple[str, ...]
    key_purge: bool = False
    token: str = field(default_factory=lambda: generate_token()[0], repr=False)

    @property
    def top_role(self) -> Role:
        return max(r for r in (Role.parse(n) for n in self.roles) if r is not None)

    def rest(self, instance: str | None = None, **extra: str) -> dict[str, str]:
        """Key Protect request headers (``correlation_id="x"`` becomes ``correlation-id``)."""
        return {
            "authorization": f"Bearer {self.token}",
            "bluemix-instance": instance or self.instance,
            **{k.replace("_", "-"): v for k, v in extra.items()},
        }

    def grpc(self, instance: str | None = None, **extra: str) -> tuple[tuple[str, str], ...]:
        return (
            ("authorization", f"Bearer {self.token}"),
            ("bluemix-instance", instance or self.instance),
            *((k.replace("_", "-"), v) for k, v in extra.items()),
        )

    def config(self) -> StaticTokenConfig:
        return StaticTokenConfig(
            token_sha256=hash_token(self.token),
            principal=self.principal,
            instances=[self.instance],
            roles=list(self.roles),
            key_purge=self.key_purge,
        )


CALLERS: dict[str, Caller] = {
    c.name: c
    for c in (
        Caller("reader", "svc-reader", INSTANCE_A, ("Reader",)),
        Caller("reader_plus", "svc-reader-plus", INSTANCE_A, ("ReaderPlus",)),
        Caller("writer", "svc-writer", INSTANCE_A, ("Writer",)),
        Caller("manager", "svc-manager", INSTANCE_A, ("Manager",)),
        Caller("purger", "svc-purger", INSTANCE_A, ("Manager",), key_purge=True),
        Caller("manager_b", "svc-manager-b", INSTANCE_B, ("Manager",)),
        Caller("purger_b", "svc-purger-b", INSTANCE_B, ("Manager",), key_purge=True),
    )
}
#: The role callers of instance A, weakest first: the columns of the role × action matrices.
ROLE_CALLERS = ("reader", "reader_plus", "writer", "manager", "purger")


def caller_tokens() -> StaticTokens:
    """The static tokens of every caller in `CALLERS` (configured by digest, as in production)."""
    return StaticTokens(c.config() for c in CALLERS.values())


def static_authenticator() -> Authenticator:
    return Authenticator(tokens=caller_tokens())


# --- the stack ----------------------------------------------------------------------------------------


class ManualClock:
    """The rate limiter's clock: it moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Stack:
    services: Services
    authenticator: Any
    gate: SecurityGate
    sink: MemorySink
    limiter_clock: ManualClock

    @property
    def clock(self) -> FixedClock:
        return clock_of(self.services)

    def events(self) -> list[dict[str, Any]]:
        return self.sink.events()

    def take_events(self) -> list[dict[str, Any]]:
        """The events since the last call (and forget them)."""
        events = self.sink.events()
        self.sink.lines.clear()
        return events

    def ctx(self, instance: str = INSTANCE_A, principal: str = "test-setup") -> CallContext:
        """A service-layer context for setting things up without going through the gate."""
        return CallContext(Principal(principal), instance)

    def new_key(self, instance: str = INSTANCE_A, name: str = "matrix-key", **spec: Any) -> Key:
        return self.services.keys.create(self.ctx(instance), KeySpec(name=name, **spec))


def make_stack(
    backend: Any,
    *,
    authenticator: Any = None,
    limits: Mapping[ActionClass, BucketConfig] | None = None,
    authz: AuthzConfig | None = None,
) -> Stack:
    services = build_services(backend)
    # Import keypairs of IMPORT_KEY_BITS unless the caller asks for a size (gRPC can).
    services.import_tokens.create = functools.partial(  # type: ignore[method-assign]
        services.import_tokens.create, key_bits=IMPORT_KEY_BITS
    )
    sink = MemorySink()
    clock = ManualClock()
    limiter = RateLimiter(limits, clock=clock) if limits is not None else None
    gate = SecurityGate(Authorizer(authz), AuditLog(sink), limiter)
    return Stack(services, authenticator or static_authenticator(), gate, sink, clock)


def release_hsm_objects(stack: Stack) -> None:
    """Destroy the import keypairs the stack's instances still hold on the shared token (keys
    are wrapped into the store and leave nothing there): the suite checks for leaked objects."""
    store = stack.services.store
    for instance in {c.instance for c in CALLERS.values()}:
        token = store.get_import_token(instance)
        if token is not None:
            stack.services.backend.destroy_import_keypair(token.hsm_object_id)


def snapshot(stack: Stack, instance: str = INSTANCE_A) -> dict[str, Any]:
    """Everything of an instance a call could change, read from the store (no lazy updates):
    keys in every state, their versions and policies, registrations, key rings, instance
    policies, the import token."""
    store = stack.services.store
    keys = store.list_keys(instance, KeyQuery(limit=1_000_000))
    return {
        "keys": {k.id: k for k in keys},
        "versions": {k.id: store.list_versions(instance, k.id) for k in keys},
        "key_policies": {k.id: store.get_key_policy_records(instance, k.id) for k in keys},
        "registrations": store.list_registrations(instance, RegistrationQuery(states=None)),
        "rings": store.list_key_rings(instance),
        "instance_policies": store.get_instance_policies(instance),
        "import_token": store.get_import_token(instance),
    }


# --- gRPC ---------------------------------------------------------------------------------------------


class GrpcServer:
    """The real gRPC services (`build_server`) on 127.0.0.1, served by grpc.aio on an event loop
    of its own in a background thread; tests talk to it through ordinary synchronous stubs."""

    def __init__(self, stack: Stack, credentials: grpc.ServerCredentials | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-aio-server", daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server | None = None
        self.port = self._run(self._start(stack, credentials))
        self.target = f"127.0.0.1:{self.port}"

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    async def _start(self, stack: Stack, credentials: grpc.ServerCredentials | None) -> int:
        server, health = build_server(stack.services, stack.authenticator, gate=stack.gate)
        address = "127.0.0.1:0"
        port = (
            server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        )
        await server.start()
        await mark_serving(health, True)
        self._server = server
        return port

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        if credentials is None:
            return grpc.insecure_channel(self.target)
        return grpc.secure_channel(self.target, credentials)

    def close(self) -> None:
        if self._server is not None:
            self._run(self._server.stop(None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.keys = keys_pb2_grpc.KeyServiceStub(channel)
        self.crypto = crypto_pb2_grpc.CryptoServiceStub(channel)
        self.tokens = import_tokens_pb2_grpc.ImportTokenServiceStub(channel)
        self.hsm = hsm_pb2_grpc.HsmServiceStub(channel)
        self.push = push_pb2_grpc.PushServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    info = error_details_pb2.ErrorInfo()
    if status is None or not status.details or not status.details[0].Unpack(info):
        raise AssertionError("the error carries no google.rpc.Status with an ErrorInfo")
    return info


# --- client-side helpers ---------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_body(name: str = "root-key", **fields: Any) -> dict[str, Any]:
    """A Key Protect create-key collection."""
    return {
        "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
        "resources": [{"type": KEY_TYPE, "name": name, "extractable": False, **fields}],
    }


def seal_for_import(
    public_pem: bytes, nonce: bytes, material: bytes, *, sha1: bool = False
) -> dict[str, Any]:
    """What a Key Protect SDK sends for a secure import: payload = RSA-OAEP(material) and
    encryptedNonce/iv = AES-GCM(material, nonce). Returns the REST fields and the raw parts."""
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(public, rsa.RSAPublicKey)
    digest = hashes.SHA1() if sha1 else hashes.SHA256()
    encrypted_key = public.encrypt(
        material, padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
    )
    iv = os.urandom(12)
    encrypted_nonce = AESGCM(material).encrypt(iv, nonce, None)
    return {
        "encrypted_key": encrypted_key,
        "iv": iv,
        "encrypted_nonce": encrypted_nonce,
        "rest": {
            "payload": b64(encrypted_key),
            "encryptedNonce": b64(encrypted_nonce),
            "iv": b64(iv),
            "encryptionAlgorithm": "RSAES_OAEP_SHA_1" if sha1 else "RSAES_OAEP_SHA_256",
        },
    }
