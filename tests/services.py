"""Building the core service layer for tests, over the software fake or the real SoftHSM2 backend.

Not a test module: `services_fixtures.py` turns these helpers into fixtures, and test modules
that need something unusual (a second backend, a shared file store) call them directly.

Every service object gets a fresh migrated store and a `FixedClock`, so the lifecycle timings
(30 s, 1 h, 4 h, 7 d, 30 d) are driven by `clock.advance(...)`, never by sleeping.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsmbridge.core.backend import CryptoBackend, OaepHash
from hsmbridge.core.clock import FixedClock
from hsmbridge.core.import_tokens import SecureImport
from hsmbridge.core.model import ImportToken
from hsmbridge.core.principal import CallContext, Principal
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import Store
from hsmbridge.core.store.sqlite import SqliteStore

#: The backends every service test runs against (the fixture's parameter ids).
BACKENDS = ("fake", "softhsm")

ALICE = Principal("alice")
BOB = Principal("bob")


def new_tenant() -> str:
    return f"tenant-{uuid.uuid4()}"


def call_context(tenant: str, principal: Principal | str = ALICE) -> CallContext:
    """The context a transport would build: `principal` acting in `tenant`."""
    if isinstance(principal, str):
        principal = Principal(principal)
    return CallContext(principal, tenant)


def new_store(path: str = ":memory:") -> Store:
    store = SqliteStore(path)
    store.migrate()
    return store


def build_services(
    backend: CryptoBackend, *, clock: FixedClock | None = None, store: Store | None = None
) -> Services:
    """`Services.build` over `backend` with a fresh in-memory store and a hand-moved clock.

    Close with `close_services` (never `Services.close`, which would also close a backend the
    test may not own, such as the session-wide SoftHSM2 one).
    """
    return Services.build(store or new_store(), backend, clock=clock or FixedClock())


def close_services(services: Services) -> None:
    services.store.close()


def clock_of(services: Services) -> FixedClock:
    clock = services.clock
    assert isinstance(clock, FixedClock), "test services are always built with a FixedClock"
    return clock


# --- the client side of secure import (what a Key Protect SDK does) ------------------------------


@dataclass(frozen=True)
class ClientImport:
    """A secure-import request as a client builds it, with the material kept for checking."""

    material: bytes
    request: SecureImport


def public_key_of(token: ImportToken) -> rsa.RSAPublicKey:
    key = serialization.load_der_public_key(token.public_key_der)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def encrypt_for_import(
    token: ImportToken,
    material: bytes | None = None,
    *,
    oaep_hash: OaepHash = OaepHash.SHA256,
    nonce: bytes | None = None,
    nonce_material: bytes | None = None,
    public_key: rsa.RSAPublicKey | None = None,
) -> ClientImport:
    """Spec §5.3 steps 3–5: OAEP-encrypt `material` to the token's public key and AES-GCM-encrypt
    the token nonce under the material with a random 12-byte IV.

    `nonce`, `nonce_material` and `public_key` let a test get one step wrong on purpose.
    """
    material = os.urandom(32) if material is None else material
    algorithm = hashes.SHA256() if oaep_hash is OaepHash.SHA256 else hashes.SHA1()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
    encrypted_key = (public_key or public_key_of(token)).encrypt(material, oaep)
    iv = os.urandom(12)
    encrypted_nonce = AESGCM(nonce_material or material).encrypt(
        iv, token.nonce if nonce is None else nonce, None
    )
    return ClientImport(material, SecureImport(encrypted_key, iv, encrypted_nonce, oaep_hash))
