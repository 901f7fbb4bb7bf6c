"""Import tokens: a per-tenant RSA keypair in the HSM for bring-your-own-key.

Semantics follow Key Protect (spec §5.1): one token per tenant, a new one replaces the old (and
its keypair is destroyed in the HSM); `retrieve` hands out the public key and the 12-byte nonce and
counts down `remainingRetrievals`; retrieval fails once the count is spent or the token expired.
Imports need an unexpired token, not a remaining retrieval: with the default of one retrieval the
documented flow (create, retrieve once, import) could otherwise never work.

An RSA-4096 keygen takes ≈1 s on SoftHSM2, so `create` takes a pre-generated keypair from an
attached `KeypairPool` (core/keypair_pool.py) when one of the requested size is ready and only
generates inline otherwise; a pooled keypair then lives and dies like any other import keypair.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from hsmbridge.core.backend import CryptoBackend, OaepHash, wipe
from hsmbridge.core.clock import Clock
from hsmbridge.core.keypair_pool import KeypairPool, PooledKeypair
from hsmbridge.core.model import ImportToken, WrappedKey
from hsmbridge.core.principal import CallContext
from hsmbridge.core.store.base import Store
from hsmbridge.errors import Conflict, HsmBridgeError, InvalidInput, NotFound, Reason

log = logging.getLogger(__name__)

MIN_EXPIRATION = 300
MAX_EXPIRATION = 86_400
DEFAULT_EXPIRATION = 600
MAX_RETRIEVALS = 500
DEFAULT_KEY_BITS = 4096
KEY_BITS = (2048, 3072, 4096)
NONCE_SIZE = 12


@dataclass(frozen=True, slots=True)
class SecureImport:
    """What a client sends to import key material encrypted to the tenant's import token."""

    encrypted_key: bytes
    iv: bytes
    encrypted_nonce: bytes
    oaep_hash: OaepHash = OaepHash.SHA256


def _found(token: ImportToken | None) -> ImportToken:
    if token is None:
        raise NotFound(
            "An import token was not found in the specified service instance. To create an "
            "import token, use 'POST /import_token'.",
            reason=Reason.IMPORT_TOKEN_NOT_FOUND,
        )
    return token


class ImportTokenService:
    def __init__(self, store: Store, backend: CryptoBackend, clock: Clock) -> None:
        self._store = store
        self._backend = backend
        self._clock = clock
        self.pool: KeypairPool | None = None

    def attach_pool(self, pool: KeypairPool) -> None:
        """Serve `create` from `pool`: first destroy the unused pooled keypairs whose owner is
        provably gone (and that no stored token refers to), then start the background refill
        and the pool's lease; the pool sweeps again now and then (core/keypair_pool.py)."""

        def in_use() -> list[str]:
            far_future = self._clock.now() + timedelta(days=365 * 100)
            ids = [t.hsm_object_id for t in self._store.list_import_tokens_expired_before(far_future)]
            # Bound import parameters (core/external_keys.py) hold pooled keypairs too.
            with self._store.transaction() as tx:
                bound = tx.external.list_import_parameters_expired(far_future)
            return ids + [p.hsm_object_id for p in bound if not p.used]

        pool.destroy_orphans(in_use())
        self.pool = pool
        pool.start(in_use)

    def close(self) -> None:
        """Stop the pool (destroying its unused keypairs); call before the backend closes."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()

    def create(
        self,
        ctx: CallContext,
        *,
        expiration_seconds: int = DEFAULT_EXPIRATION,
        max_retrievals: int = 1,
        key_bits: int = DEFAULT_KEY_BITS,
    ) -> ImportToken:
        if not MIN_EXPIRATION <= expiration_seconds <= MAX_EXPIRATION:
            raise InvalidInput(
                f"The field 'expiration' must be: between {MIN_EXPIRATION} and {MAX_EXPIRATION}",
                reason=Reason.INVALID_FIELD,
                target="expiration",
            )
        if not 1 <= max_retrievals <= MAX_RETRIEVALS:
            raise InvalidInput(
                f"The field 'maxAllowedRetrievals' must be: between 1 and {MAX_RETRIEVALS}",
                reason=Reason.INVALID_FIELD,
                target="maxAllowedRetrievals",
            )
        if key_bits not in KEY_BITS:
            raise InvalidInput(
                "The RSA key size must be 2048, 3072 or 4096 bits",
                reason=Reason.INVALID_FIELD,
                target="keyBits",
            )
        pooled: PooledKeypair | None = self.pool.take(key_bits) if self.pool is not None else None
        if pooled is not None:
            object_id, public_der = pooled.object_id, pooled.public_key_der
        else:
            object_id = uuid.uuid4().hex
            public_der = self._backend.create_import_keypair(object_id, key_bits)
        now = self._clock.now()
        token = ImportToken(
            id=str(uuid.uuid4()),
            tenant=ctx.tenant,
            created_at=now,
            expires_at=now + timedelta(seconds=expiration_seconds),
            max_retrievals=max_retrievals,
            remaining_retrievals=max_retrievals,
            nonce=self._backend.random(NONCE_SIZE),
            key_bits=key_bits,
            public_key_der=public_der,
            hsm_object_id=object_id,
            created_by=ctx.actor,
        )
        try:
            with self._store.transaction() as tx:
                tx.ensure_tenant(ctx.tenant, now)
                previous = tx.put_import_token(token)
        except BaseException:
            if pooled is not None and self.pool is not None:
                self.pool.give_back(pooled)
            else:
                self._destroy_quietly(object_id)
            raise
        if previous is not None:
            self._destroy_quietly(previous.hsm_object_id)
        return token

    def current(self, ctx: CallContext) -> ImportToken:
        return _found(self._store.get_import_token(ctx.tenant))

    def retrieve(self, ctx: CallContext) -> ImportToken:
        """Hand out the public key and nonce, spending one retrieval.

        Read, check and decrement in one write transaction: concurrent retrievals (threads or
        replicas) must not all read the same count and overspend `maxAllowedRetrievals`.
        """
        with self._store.transaction() as tx:
            token = _found(tx.get_import_token(ctx.tenant))
            now = self._clock.now()
            if token.expires_at <= now:
                raise Conflict(
                    "The import token has reached its 'expirationDate'. To create a new import token, "
                    "use 'POST /import_token'.",
                    reason=Reason.IMPORT_TOKEN_EXPIRED,
                )
            if token.remaining_retrievals <= 0:
                # Same reason code as expiry (Key Protect has one for both), but a message that says
                # which limit was hit: a newcomer reading "expired" ten seconds after creating the
                # token looks for a clock problem, not for maxAllowedRetrievals.
                raise Conflict(
                    f"The import token's retrievals are used up (maxAllowedRetrievals "
                    f"{token.max_retrievals}); it has not expired. To create a new import token, use "
                    "'POST /import_token' (with a larger 'maxAllowedRetrievals' to retrieve it more often).",
                    reason=Reason.IMPORT_TOKEN_EXPIRED,
                )
            token.remaining_retrievals -= 1
            tx.update_import_token(token)
        return token

    def unwrap(self, ctx: CallContext, material: SecureImport) -> WrappedKey:
        """Decrypt imported key material in the HSM and check the proof of possession."""
        token = self.current(ctx)
        if token.expires_at <= self._clock.now():
            raise Conflict(
                "The import token that was used to encrypt this key has reached its 'expirationDate', "
                "and it is no longer available for key operations. To create a new import token, use "
                "'POST /import_token'.",
                reason=Reason.IMPORT_TOKEN_EXPIRED,
            )
        if len(material.iv) != NONCE_SIZE:
            raise InvalidInput(
                "The field 'iv' must be: 12 bytes, base64 encoded",
                reason=Reason.INCORRECT_NONCE_IV,
                target="iv",
            )
        imported = self._backend.import_key(
            token.hsm_object_id,
            material.encrypted_key,
            material.oaep_hash,
            material.iv,
            material.encrypted_nonce,
        )
        nonce = bytearray(imported.nonce)
        try:
            if not hmac.compare_digest(bytes(nonce), token.nonce):
                raise InvalidInput(
                    "The encrypted nonce given does not match existing record",
                    reason=Reason.INCORRECT_NONCE,
                    target="encryptedNonce",
                )
        finally:
            wipe(nonce)
        return imported.wrapped

    def sweep_expired(self) -> int:
        """Destroy expired tokens' keypairs in the HSM and forget them; returns how many."""
        expired = self._store.list_import_tokens_expired_before(self._clock.now())
        for token in expired:
            self._destroy_quietly(token.hsm_object_id)
            with self._store.transaction() as tx:
                tx.delete_import_token(token.tenant, token.id)
        return len(expired)

    def _destroy_quietly(self, object_id: str) -> None:
        try:
            self._backend.destroy_import_keypair(object_id)
        except HsmBridgeError as exc:
            log.warning("could not destroy import keypair %s: %s", object_id, exc.reason)
