"""`CryptoBackend` over any PKCS#11 module.

Shape of the objects this creates on the token:

- the **master KEK**: an AES-256 token object found by label, created only by `hsmbridge init`
  (and by master KEK rotation, hsmbridge/kek_rotation.py). New material is wrapped under the
  configured `kek_label`; stored material is unwrapped under the KEK its `WrappedKey.kek_label`
  names, so versions under the old and the new KEK both work while a rotation runs;
- **import keypairs**: RSA token objects (`CKA_ID` = the import token's object id), because an
  import token must survive a daemon restart until it expires; the public half is a session object
  (the store keeps its DER);
- **use keys**: root-key versions unwrapped under the KEK into non-extractable, sensitive *session*
  objects owned by the login session, cached per process (`HandleCache`);
- **transient keys** (generation, plain and secure import): session objects destroyed as soon as
  they are wrapped under the KEK.

Root keys leave the HSM only wrapped under the KEK (RFC 5649). Where the KEK is `CKA_TRUSTED`,
transient keys carry `CKA_WRAP_WITH_TRUSTED` so no other key can wrap them. SoftHSM2 cannot give a
user's private KEK `CKA_TRUSTED` (only the SO may set it, and the SO cannot see private objects),
so there transient keys are extractable-but-sensitive for the microseconds before they are wrapped
and destroyed; docs/hsm.md explains it.

Every operation goes through `_run`, which maps CKRs once (hsm/errors.py), recovers (replace a
dead session, reload stale handles) and retries once when the operation changes nothing
persistent. A device-level failure (token gone, library not initialised, device error) is handed
to the backend's `HsmHealth` (hsm/recovery.py): one background thread re-initialises with capped
backoff for as long as it takes, and meanwhile every call fails fast with `HsmUnavailable` +
`retry_after`. `healthy` / `health` expose that state cheaply (readiness, hsm/group.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pkcs11
from cryptography.hazmat.primitives import serialization
from pkcs11 import MGF, Attribute, GCMParams, KeyType, Mechanism, ObjectClass

from hsmbridge.core.backend import (
    Capabilities,
    ExportWrapping,
    HsmInfo,
    ImportedKey,
    KeyRef,
    KeyWrapping,
    MaterialKind,
    OaepHash,
    wipe,
)
from hsmbridge.core.model import WrappedKey
from hsmbridge.errors import (
    HsmBridgeError,
    HsmUnavailable,
    IntegrityError,
    InternalError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Reason,
    Unsupported,
)
from hsmbridge.hsm import capabilities as capability_probe
from hsmbridge.hsm import export
from hsmbridge.hsm.cache import CachedKey, HandleCache, cka_id_for, next_load_id
from hsmbridge.hsm.errors import Recovery, StaleTokenView, recovery_for, to_domain, transient_recovery
from hsmbridge.hsm.library import Pkcs11Library
from hsmbridge.hsm.oaep import oaep_decode
from hsmbridge.hsm.pool import PooledSession, SessionPool
from hsmbridge.hsm.recovery import HsmHealth, HsmState, RecoveryPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The stored key format is RFC 5649 under the master KEK; its name in the store (WrappedKey's
#: `mechanism`) is this one whichever PKCS#11 mechanism the token computes it with
#: (`_calls.rfc5649`).
KWP = Mechanism.AES_KEY_WRAP_PAD
AES_LENGTHS = (16, 24, 32)
IMPORT_LABEL_PREFIX = "hsmbridge-import-"
#: import private keys remembered per session (a token's live import tokens, a pool's keypairs)
IMPORT_HANDLES_PER_SESSION = 64
#: a pooled keypair an import token took (`claim_import_keypair`): no longer "pool-" by label
CLAIMED_LABEL_PREFIX = IMPORT_LABEL_PREFIX + "token-"
LEASE_APPLICATION = "hsmbridge-keypair-pool-lease"
LEASE_LABEL_PREFIX = "hsmbridge-pool-lease-"
_OAEP = {
    OaepHash.SHA1: (Mechanism.SHA_1, MGF.SHA1, "sha1"),
    OaepHash.SHA256: (Mechanism.SHA256, MGF.SHA256, "sha256"),
}

_WRAPPING_OAEP = {KeyWrapping.OAEP_SHA1: OaepHash.SHA1, KeyWrapping.OAEP_SHA256: OaepHash.SHA256}


#: The master KEK's attributes, whether generated here (`hsmbridge init`) or imported into each
#: token of a SoftHSM2 test group (hsm/group.py `import_shared_kek`).
KEK_ATTRIBUTES: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.WRAP: True,
    Attribute.UNWRAP: True,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.MODIFIABLE: False,
}


@dataclass(frozen=True)
class Pkcs11Settings:
    module: str
    pin: str
    #: the module's `CK_C_INITIALIZE_ARGS.pReserved` string (NSS softoken: its `configdir=...`)
    init_args: str | None = None
    token_label: str | None = "hsmbridge"
    slot_id: int | None = None
    kek_label: str = "hsmbridge-master-kek"
    pool_size: int = 8
    checkout_timeout: float = 5.0
    cache_size: int = 1024
    #: Decrypt RSA-OAEP-SHA256 imports with raw RSA in the HSM and decode OAEP here, for tokens
    #: (SoftHSM2 2.6.1) that lack OAEP-SHA256. Off in production configs.
    oaep_sha256_fallback: bool = False
    #: IVs are drawn from the HSM's RNG in blocks of this many IVs.
    iv_block: int = 1024
    #: how the backend recovers from an HSM outage (hsm/recovery.py)
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    #: Compute export wrappings the token lacks (OAEP-SHA256 on SoftHSM2 2.6.1) in software, for
    #: pushing keys to cloud KMSs (hsm/export.py). Off in production configs.
    export_software_fallback: bool = False

    def __repr__(self) -> str:  # never print the PIN
        return (
            f"Pkcs11Settings(module={self.module!r}, token_label={self.token_label!r}, "
            f"slot_id={self.slot_id})"
        )


def _drop_frames(exc: BaseException) -> None:
    """Free the frames of a failed PKCS#11 call now, while this thread still holds its permit.

    A python-pkcs11 search whose C_FindObjectsInit failed stays "active" and calls
    C_FindObjectsFinal from `__del__`; kept alive by the traceback (and by the `__context__` of
    the domain error raised from it), that call would run later, outside any permit — perhaps
    while the module is being re-initialised, with a session handle that is no longer ours.
    """
    exc.__traceback__ = None


class _HsmRandomBuffer:
    """96-bit IVs from the HSM's RNG, fetched in blocks so the hot path makes no extra HSM call.

    Each IV is handed out exactly once (the lock makes the slices disjoint); the buffer is never
    shared across processes (workers are spawned, not forked).
    """

    def __init__(self, fetch: Callable[[int], bytes], block: int) -> None:
        self._fetch = fetch
        self._block = block * 12
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def take(self) -> bytes:
        with self._lock:
            if self._pos + 12 > len(self._buf):
                self._buf = self._fetch(self._block)
                self._pos = 0
            iv = self._buf[self._pos : self._pos + 12]
            self._pos += 12
            return iv


class Pkcs11Backend:
    def __init__(self, settings: Pkcs11Settings, *, create_kek: bool = False) -> None:
        self.settings = settings
        self.library = Pkcs11Library.load(settings.module, settings.init_args)
        self.health = HsmHealth(
            settings.token_label or f"slot-{settings.slot_id}",
            self._recovery_attempt,
            settings.recovery,
            probe=self._probe,
        )
        self.library.register(self.health)
        self.pool = SessionPool(
            self.library,
            token_label=settings.token_label,
            slot_id=settings.slot_id,
            pin=settings.pin,
            size=settings.pool_size,
            checkout_timeout=settings.checkout_timeout,
        )
        self.cache = HandleCache(settings.cache_size)
        #: KEK label → that KEK as seen from the login session, valid for `_login_epoch`
        self._login_keks: dict[str, Any] = {}
        self._login_epoch = -1
        self.ensure_kek(settings.kek_label, create=create_kek)
        with self.pool.checkout() as pooled:
            #: how this module must be called (capabilities.ModuleCalls): GCM, the RFC 5649 wrap
            self._capabilities, self._calls = capability_probe.probe(
                pooled.session,
                self._kek(pooled),
                oaep_sha256_fallback=settings.oaep_sha256_fallback,
                sized=self.library.sized,
            )
        self._check_capabilities()
        self._ivs = _HsmRandomBuffer(self.random, settings.iv_block)
        self.health.started()
        log.info("HSM capabilities: %s", self._capabilities.as_dict())
        if self._capabilities.oaep_sha256_available and not self._capabilities.rsa_oaep_sha256:
            log.warning(
                "RSA-OAEP-SHA256 imports use the software OAEP-decoding fallback (raw RSA in the HSM): "
                "acceptable for development on SoftHSM2, disable `hsm.oaep_sha256_fallback` in production"
            )

    # -- set-up --------------------------------------------------------------------------------

    @staticmethod
    def _kek_template(label: str) -> dict[Attribute, Any]:
        return {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}

    def ensure_kek(self, label: str, *, create: bool) -> bool:
        """Find the master KEK `label` on the token, creating it if asked; True if created.

        Public for master KEK rotation (hsmbridge/kek_rotation.py), which creates the next KEK
        with exactly the attributes `hsmbridge init` gives the first one.
        """

        def op(pooled: PooledSession) -> bool:
            found = list(pooled.session.get_objects(self._kek_template(label)))
            if len(found) > 1:
                raise InvalidInput(f"several objects are labelled {label!r} on the token")
            if found:
                return False
            if not create:
                raise NotFound(
                    f"master KEK {label!r} not found on the token; create it with `hsmbridge init`",
                    reason=Reason.NOT_FOUND,
                )
            pooled.session.generate_key(KeyType.AES, 256, label=label, store=True, template=KEK_ATTRIBUTES)
            log.info("created master KEK %r on the token", label)
            return True

        # Retried: a second attempt looks the label up first, so it never makes a second KEK.
        return self._run("ensure-kek", op)

    def kwp_wrap(self, wrapper: Any, key: Any) -> bytes:
        """RFC 5649 of `key` under `wrapper`, the way this token computes it (the probe chose
        the mechanism and the call)."""
        return self._calls.wrap_key(wrapper, key, self._calls.rfc5649)

    def _check_capabilities(self) -> None:
        caps = self._capabilities
        missing = [
            name
            for name, ok in (("AES-GCM", caps.aes_gcm), ("AES key wrap with padding", caps.aes_key_wrap_pad))
            if not ok
        ]
        if missing:
            raise Unsupported(f"the token cannot do {', '.join(missing)}, which hsmbridge requires")

    def _find_kek(self, session: Any, label: str) -> Any:
        try:
            return session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
        except pkcs11.NoSuchKey:
            pass
        if label != self.settings.kek_label:
            # Another KEK than ours (a version not yet, or no longer, under the configured one):
            # if ours is still visible the token's view is fine, and that KEK is really gone.
            try:
                session.get_key(object_class=ObjectClass.SECRET_KEY, label=self.settings.kek_label)
            except pkcs11.NoSuchKey:
                pass
            else:
                raise InternalError(
                    f"key material is wrapped under master KEK {label!r}, which is not on the token; "
                    "restore that KEK, or rotate before destroying it"
                )
        # Ours was there at start-up: the token restarted or is failing over, not misconfigured.
        raise StaleTokenView()

    def _kek(self, pooled: PooledSession, label: str | None = None) -> Any:
        """The KEK `label` (default: the configured one, which wraps all new material) as seen
        from this session. Stored versions name their own KEK, so during a master KEK rotation
        material under the old and the new KEK both unwrap."""
        label = label or self.settings.kek_label
        kek = pooled.keks.get(label)
        if kek is None:
            kek = pooled.keks[label] = self._find_kek(pooled.session, label)
        return kek

    def kek_trusted(self, label: str) -> bool:
        """Is the KEK `label` `CKA_TRUSTED`? Where ours is, transient keys carry
        `CKA_WRAP_WITH_TRUSTED`, so a rotation target that is not trusted could wrap nothing."""
        return self._run("kek-trusted", lambda pooled: bool(self._kek(pooled, label)[Attribute.TRUSTED]))

    def _transient_template(self, *, decrypt: bool = False) -> dict[Attribute, Any]:
        """Keys that exist only to be wrapped under the KEK (and, on import, to open the nonce)."""
        return {
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: True,
            Attribute.WRAP_WITH_TRUSTED: self._capabilities.trusted_kek,
            Attribute.DECRYPT: decrypt,
            Attribute.ENCRYPT: False,
        }

    # -- the retry/recovery loop ---------------------------------------------------------------

    def _run(self, operation: str, fn: Callable[[PooledSession], T], *, retry_safe: bool = True) -> T:
        # Two attempts: one retry after a recovery. A session replacement that then finds the
        # module itself dead (NSS softoken finalised behind our back: SessionHandleInvalid first,
        # SlotIDInvalid on the new session) still gets the re-initialisation and its one retry.
        last, attempt, replaced = 2, 0, False
        while attempt < last:
            attempt += 1
            self.health.admit()
            failure: BaseException
            try:
                with self.pool.checkout() as pooled:
                    try:
                        return fn(pooled)
                    except pkcs11.PKCS11Error as exc:
                        _drop_frames(exc)
                        recovery = transient_recovery(exc)
                        if recovery is Recovery.NONE or (
                            recovery is Recovery.RETRY and (attempt >= 2 or not retry_safe)
                        ):
                            if not self._token_gone(pooled, exc):
                                raise to_domain(exc, operation) from None
                            recovery = Recovery.REINITIALIZE
                        elif recovery is not Recovery.REINITIALIZE and attempt >= 2:
                            # replacing the session or reloading handles did not help (the login
                            # session itself may be dead): rebuild everything
                            recovery = Recovery.REINITIALIZE
                        elif recovery is not Recovery.REINITIALIZE and not retry_safe:
                            self._recover(recovery, pooled)
                            raise to_domain(exc, operation) from None
                        if recovery is not Recovery.REINITIALIZE:
                            log.warning(
                                "%s failed (%s): recovering by %s",
                                operation,
                                type(exc).__name__,
                                recovery.value,
                            )
                            self._recover(recovery, pooled)
                            replaced = replaced or recovery is Recovery.REPLACE_SESSION
                            continue
                        failure = exc
            except pkcs11.PKCS11Error as exc:  # the checkout itself: opening a session, rebuilding
                _drop_frames(exc)
                if attempt == 1 and retry_safe and transient_recovery(exc) is Recovery.RETRY:
                    continue
                failure = exc
            # A device-level failure: recovery re-initialises the module, which must not happen
            # while this call holds a session, so it is reported only after the checkout ended.
            cause = f"{operation}: {type(failure).__name__}"
            if not self.health.report_failure(cause) and self.health.state is HsmState.STARTING:
                raise to_domain(failure, operation) from None  # a start-up error, not an outage
            if attempt == last and replaced and last == 2:
                last = 3
            if attempt == last or not retry_safe or not self.health.wait_up(self.health.caller_wait()):
                raise self.health.unavailable(operation) from None
        raise AssertionError("unreachable")

    def _token_gone(self, pooled: PooledSession, exc: BaseException) -> bool:
        """Would `exc` become a 500? Then first ask whether the token is still there: during an
        outage SoftHSM2 answers token-object operations with CKR_GENERAL_ERROR, which must be
        a retryable 503, not an internal error. A token whose master KEK is not visible is gone."""
        if not isinstance(to_domain(exc, "probe"), InternalError):
            return False
        try:
            pooled.session.get_key(object_class=ObjectClass.SECRET_KEY, label=self.settings.kek_label)
        except pkcs11.PKCS11Error as probe_failure:
            _drop_frames(probe_failure)
            return True
        return False

    def _recover(self, recovery: Recovery, pooled: PooledSession) -> None:
        if recovery is Recovery.RETRY:
            return
        if recovery is Recovery.REPLACE_SESSION:
            self.pool.replace(pooled)
        elif recovery is Recovery.RELOAD_OBJECT:
            pooled.keys.clear()
            pooled.keks.clear()
            pooled.imports.clear()
            with self.pool.login_lock:
                self._login_keks.clear()
                self._destroy_cached(self.cache.clear())

    def _recovery_attempt(self) -> None:
        """One attempt of the recovery thread (hsm/recovery.py): re-initialise the module unless
        a sibling backend already did (or, while siblings serve from it, unless that was done
        lately), rebuild the pool, log in, and find the master KEK; raises while still down."""
        library, policy = self.library, self.settings.recovery
        seen = self.pool.generation
        if library.generation == seen:
            siblings_serving = library.healthy_users(self.health) > 0
            recent = time.monotonic() - library.initialized_at < policy.shared_reinit_interval
            if not (siblings_serving and recent):
                library.reinitialize(seen, drain_timeout=policy.drain_timeout)
        with library.recovery_lock, library.calls():
            try:
                self.pool.rebuild(force=self.pool.generation == seen)
                with self.pool.login_lock:
                    self.cache.clear()  # their objects died with the old login session: nothing to destroy
                    self._login_keks.clear()
                    self._find_kek(self.pool.login, self.settings.kek_label)
            except pkcs11.PKCS11Error as exc:
                _drop_frames(exc)  # inside the permit: see _drop_frames
                raise

    def _probe(self) -> bool:
        """Is our master KEK visible from the login session? One C_FindObjects, no state change;
        asked once more after CKR_GENERAL_ERROR: SoftHSM2 fails one C_FindObjectsInit after a
        session that owned objects closed (`transient_recovery`). A sibling's recovery closing its
        sessions must not make this backend fail its probe, start recovering, and re-initialise
        (or log out of) a token that serves (seen with two tokens of one module under load)."""
        try:
            # Never on an event loop (readiness runs it in a thread): it may wait out a sibling's
            # re-initialisation, which says nothing about our token, instead of failing for it.
            with self.library.calls(wait=self.settings.recovery.drain_timeout), self.pool.login_lock:
                # A sibling backend re-initialised the shared module since our last checkout: our
                # login handle is dead (and its number may name another pool's session now).
                # Catch up as the next checkout would, instead of probing with it.
                try:
                    self.pool.catch_up()
                except pkcs11.PKCS11Error as exc:
                    _drop_frames(exc)  # the token is still away
                    return False
                for attempt in (1, 2):
                    try:
                        self.pool.login.get_key(
                            object_class=ObjectClass.SECRET_KEY, label=self.settings.kek_label
                        )
                    except pkcs11.GeneralError as exc:
                        _drop_frames(exc)  # inside the permit: see _drop_frames
                        if attempt == 2:
                            return False
                    except pkcs11.PKCS11Error as exc:
                        _drop_frames(exc)  # inside the permit: see _drop_frames
                        return False
                    else:
                        return True
        except (HsmUnavailable, AttributeError):
            return False
        return False

    @property
    def healthy(self) -> bool:
        """Serving now (no HSM call: readiness and failover read it often)."""
        return self.health.healthy

    def check(self) -> bool:
        """Healthy, confirmed by one HSM call (the master KEK is visible from the login session);
        a failed check starts recovering. Readiness calls it: a token that vanished while no
        request came (an unready pod gets none) must still be noticed, and recovered from."""
        return self.health.confirm()

    # -- cached use keys -------------------------------------------------------------------------

    def _with_key(self, pooled: PooledSession, ref: KeyRef, use: Callable[[Any], T]) -> T:
        """Run `use(key object as seen from this session)`, holding a reference on the cache entry
        so that no eviction destroys the object meanwhile."""
        if ref.wrapped.kind != MaterialKind.AES:
            raise InternalError("only root (AES) key material can be used for envelope encryption")
        entry = self.cache.acquire(ref.version_id, self.pool.epoch) or self._load(ref)
        try:
            obj = pooled.keys.get(entry.load_id)
            if obj is None:
                if len(pooled.keys) > 2 * self.cache.capacity:
                    pooled.keys.clear()
                obj = pooled.session.get_key(object_class=ObjectClass.SECRET_KEY, id=entry.cka_id)
                pooled.keys[entry.load_id] = obj
            return use(obj)
        finally:
            if self.cache.release(entry):
                pooled.keys.pop(entry.load_id, None)
                with self.pool.login_lock:
                    self._destroy_cached([entry])

    def _load(self, ref: KeyRef) -> CachedKey:
        """Unwrap a key version into the login session; return the entry, already acquired."""
        with self.pool.login_lock:
            entry = self.cache.acquire(ref.version_id, self.pool.epoch, count_miss=False)
            if entry is not None:
                return entry
            if self._login_epoch != self.pool.epoch:
                self._login_keks.clear()
                self._login_epoch = self.pool.epoch
            label = ref.wrapped.kek_label
            kek = self._login_keks.get(label)
            if kek is None:
                kek = self._login_keks[label] = self._find_kek(self.pool.login, label)
            load_id = next_load_id()
            obj = kek.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.AES,
                ref.wrapped.blob,
                mechanism=self._calls.rfc5649,
                store=False,
                template={
                    Attribute.ID: cka_id_for(load_id),
                    Attribute.TOKEN: False,
                    Attribute.PRIVATE: False,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                },
            )
            entry = CachedKey(ref.version_id, load_id, obj, self.pool.epoch)
            self._destroy_cached(self.cache.put_acquired(entry))
            return entry

    def _destroy_cached(self, entries: Sequence[CachedKey]) -> None:
        """Destroy evicted objects; caller holds the login lock (they belong to the login session)
        and a permit. Objects of an older epoch died with their login session: their handle
        numbers may belong to new objects now, so they are never passed to the module. That holds
        for the current epoch too when a sibling backend re-initialised the shared module and this
        pool has not rebuilt yet (an eviction or a close between the two): then every cached
        object is dead, and its handle may name another backend's object (a KEK) after the
        re-initialisation."""
        if self.pool.generation != self.library.generation:
            return
        for entry in entries:
            if entry.epoch != self.pool.epoch:
                continue
            # already gone (closed session) is fine
            with contextlib.suppress(pkcs11.PKCS11Error):
                entry.obj.destroy()

    def evict(self, version_ids: Sequence[str]) -> None:
        doomed: list[CachedKey] = []
        try:
            with self.library.calls(), self.pool.login_lock:
                doomed = [e for v in version_ids for e in self.cache.pop(v)]
                self._destroy_cached(doomed)
        except HsmUnavailable:
            # Re-initialising: the objects die with the module; dropped from the cache either way.
            for version_id in version_ids:
                self.cache.pop(version_id)

    # -- CryptoBackend: info ---------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return self._capabilities

    def info(self) -> HsmInfo:
        token = self.pool.token
        lib = self.library.info
        return HsmInfo(
            library_path=self.settings.module,
            manufacturer=lib["manufacturer"],
            library_description=lib["library_description"],
            library_version=lib["library_version"],
            token_label=token.label,
            token_serial=token.serial.decode() if isinstance(token.serial, bytes) else str(token.serial),
            token_model=token.model,
            kek_label=self.settings.kek_label,
            session_pool_size=self.pool.size,
            capabilities=self._capabilities,
        )

    def random(self, length: int) -> bytes:
        return self._run("generate-random", lambda p: bytes(p.session.generate_random(length * 8)))

    # -- CryptoBackend: material ----------------------------------------------------------------

    def _wrap(self, pooled: PooledSession, obj: Any, length: int, kind: MaterialKind) -> WrappedKey:
        blob = self.kwp_wrap(self._kek(pooled), obj)
        return WrappedKey(blob=bytes(blob), length=length, kek_label=self.settings.kek_label, kind=kind.value)

    def generate_key(self, kind: MaterialKind, length: int) -> WrappedKey:
        if kind is MaterialKind.SECRET:
            material = bytearray(self.random(length))
            try:
                return self.wrap_material(kind, material)
            finally:
                wipe(material)
        if length not in AES_LENGTHS:
            raise InvalidInput("AES keys are 16, 24 or 32 bytes", reason=Reason.INVALID_FIELD)

        def op(pooled: PooledSession) -> WrappedKey:
            obj = pooled.session.generate_key(
                KeyType.AES, length * 8, store=False, template=self._transient_template()
            )
            try:
                return self._wrap(pooled, obj, length, MaterialKind.AES)
            finally:
                obj.destroy()

        return self._run("generate-key", op)

    def wrap_material(self, kind: MaterialKind, material: bytes | bytearray) -> WrappedKey:
        if kind is MaterialKind.AES and len(material) not in AES_LENGTHS:
            raise InvalidInput(
                "root key material must be 16, 24 or 32 bytes", reason=Reason.INVALID_FIELD, target="payload"
            )
        if not material:
            raise InvalidInput("key material is empty", reason=Reason.INVALID_FIELD, target="payload")
        if kind is MaterialKind.SECRET and len(material) > self._calls.secret_limit:
            # refused before it is stored: this token could never give it back
            raise Unsupported(
                f"this HSM gives back standard-key payloads of at most {self._calls.secret_limit} bytes; "
                f"this one has {len(material)}"
            )
        key_type = KeyType.AES if kind is MaterialKind.AES else KeyType.GENERIC_SECRET

        def op(pooled: PooledSession) -> WrappedKey:
            obj = pooled.session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: key_type,
                    Attribute.VALUE: bytes(material),
                    **self._transient_template(),
                }
            )
            try:
                return self._wrap(pooled, obj, len(material), kind)
            finally:
                obj.destroy()

        return self._run("wrap-material", op)

    def rewrap(self, wrapped: WrappedKey, kek_label: str) -> WrappedKey:
        """The same material wrapped under the KEK `kek_label` instead (master KEK rotation).

        Inside the HSM: unwrap under the version's own KEK into a transient session object
        (sensitive, extractable only to be wrapped, `CKA_WRAP_WITH_TRUSTED` where the KEK is
        trusted), wrap it under the new KEK, destroy it. The material never leaves the HSM in
        the clear, whatever its kind.
        """
        if wrapped.kek_label == kek_label:
            return wrapped
        if wrapped.mechanism != KWP.name:
            raise Unsupported(f"cannot rewrap material wrapped with {wrapped.mechanism}")
        kind = MaterialKind(wrapped.kind)
        key_type = KeyType.AES if kind is MaterialKind.AES else KeyType.GENERIC_SECRET

        def op(pooled: PooledSession) -> WrappedKey:
            old, new = self._kek(pooled, wrapped.kek_label), self._kek(pooled, kek_label)
            obj = old.unwrap_key(
                ObjectClass.SECRET_KEY,
                key_type,
                wrapped.blob,
                mechanism=self._calls.rfc5649,
                store=False,
                template=self._transient_template(),
            )
            try:
                # A generic secret whose length is not a multiple of 8 comes back from SoftHSM2
                # with its RFC 5649 padding; `wrapped.length` stays the truth (reveal_secret).
                blob = self.kwp_wrap(new, obj)
            finally:
                obj.destroy()
            return WrappedKey(blob, wrapped.length, kek_label, wrapped.mechanism, kind.value)

        return self._run("rewrap", op)

    def reveal_secret(self, wrapped: WrappedKey) -> bytearray:
        if wrapped.kind != MaterialKind.SECRET:
            raise PermissionDenied("root key material never leaves the HSM")

        def op(pooled: PooledSession) -> bytearray:
            obj = self._kek(pooled, wrapped.kek_label).unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.GENERIC_SECRET,
                wrapped.blob,
                mechanism=self._calls.rfc5649,
                store=False,
                template={Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )
            try:
                value = bytearray(obj[Attribute.VALUE])
            finally:
                obj.destroy()
            # SoftHSM2 keeps RFC 5649 padding on generic secrets: the stored length is the truth.
            if len(value) < wrapped.length or any(value[wrapped.length :]):
                wipe(value)
                raise IntegrityError("stored key material failed its length check")
            secret = value[: wrapped.length]
            wipe(value)
            return secret

        return self._run("reveal-secret", op)

    # -- CryptoBackend: envelope -----------------------------------------------------------------

    def gcm_encrypt(self, key: KeyRef, plaintext: bytes | bytearray, aad: bytes) -> tuple[bytes, bytes]:
        iv = self._ivs.take()
        data = bytes(plaintext)
        encrypt = self._calls.encrypt_gcm

        def op(pooled: PooledSession) -> bytes:
            return self._with_key(pooled, key, lambda obj: encrypt(obj, data, iv, aad))

        return iv, self._run("gcm-encrypt", op)

    def gcm_decrypt(self, key: KeyRef, iv: bytes, ciphertext: bytes, aad: bytes) -> bytearray:
        if len(iv) != 12 or len(ciphertext) < 16:
            raise IntegrityError("the ciphertext could not be authenticated")
        params = GCMParams(iv, aad)

        def decrypt(obj: Any) -> bytearray:
            try:
                return bytearray(obj.decrypt(ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=params))
            except pkcs11.PKCS11Error as exc:
                if recovery_for(exc) is not Recovery.NONE:
                    raise
                raise to_domain(exc, "gcm-decrypt", verifying=True) from None

        def op(pooled: PooledSession) -> bytearray:
            return self._with_key(pooled, key, decrypt)

        return self._run("gcm-decrypt", op)

    def gcm_encrypt_many(
        self, key: KeyRef, items: Sequence[tuple[bytes | bytearray, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        ivs = [self._ivs.take() for _ in items]
        prepared = [(bytes(pt), iv, ad) for (pt, ad), iv in zip(items, ivs, strict=True)]
        encrypt = self._calls.encrypt_gcm

        def encrypt_all(obj: Any) -> list[bytes]:
            return [encrypt(obj, pt, iv, ad) for pt, iv, ad in prepared]

        cts = self._run("gcm-encrypt", lambda pooled: self._with_key(pooled, key, encrypt_all))
        return list(zip(ivs, cts, strict=True))

    def gcm_decrypt_many(
        self, items: Sequence[tuple[KeyRef, bytes, bytes, bytes]]
    ) -> list[bytearray | HsmBridgeError]:
        results: list[bytearray | HsmBridgeError] = [
            IntegrityError("the ciphertext could not be authenticated")
        ] * len(items)
        groups: dict[str, list[int]] = {}
        for index, (ref, iv, ct, _) in enumerate(items):
            if len(iv) == 12 and len(ct) >= 16:
                groups.setdefault(ref.version_id, []).append(index)

        def decrypt_group(indexes: list[int]) -> Callable[[Any], None]:
            def run(obj: Any) -> None:
                for index in indexes:
                    _, iv, ct, ad = items[index]
                    try:
                        results[index] = bytearray(
                            obj.decrypt(ct, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, ad))
                        )
                    except pkcs11.PKCS11Error as exc:
                        if recovery_for(exc) is not Recovery.NONE:
                            raise
                        results[index] = to_domain(exc, "gcm-decrypt", verifying=True)

            return run

        for indexes in groups.values():
            ref = items[indexes[0]][0]
            self._run(
                "gcm-decrypt", lambda pooled, r=ref, g=indexes: self._with_key(pooled, r, decrypt_group(g))
            )
        return results

    # -- CryptoBackend: import tokens ------------------------------------------------------------

    def create_import_keypair(self, object_id: str, bits: int) -> bytes:
        if bits not in (2048, 3072, 4096):
            raise InvalidInput("import keys are RSA 2048, 3072 or 4096 bits", reason=Reason.INVALID_FIELD)
        fallback = self._capabilities.oaep_sha256_fallback and self._capabilities.rsa_x509

        def op(pooled: PooledSession) -> bytes:
            pub, _priv = pooled.session.generate_keypair(
                KeyType.RSA,
                bits,
                id=object_id.encode(),
                label=IMPORT_LABEL_PREFIX + object_id,
                store=True,
                public_template={Attribute.TOKEN: False, Attribute.ENCRYPT: True, Attribute.WRAP: True},
                private_template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.UNWRAP: True,
                    Attribute.SIGN: False,
                    # raw-RSA decryption only where the OAEP-SHA256 fallback is enabled
                    Attribute.DECRYPT: fallback,
                },
            )
            try:
                return capability_probe._public_key(pub).public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            finally:
                pub.destroy()

        # Not retried: a half-done keygen may have left a token object; the caller cleans up by id.
        return self._run("create-import-keypair", op, retry_safe=False)

    def _import_private_key(self, pooled: PooledSession, object_id: str) -> Any:
        """The import keypair's private key, from this session's cache when it still names that
        object. A search (C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal) costs SoftHSM2
        0.25 ms with 4 keypairs on the token and 1.1 ms with 40 (it reads every token object);
        checking a cached handle's CKA_ID and class is one C_GetAttributeValue (0.07 ms). The
        check matters: the keypair may have been destroyed by another process since (the pool's
        cleaner, a replaced token), and a handle number may come to name another object."""
        wanted = object_id.encode()
        cached = pooled.imports.get(object_id)
        if cached is not None:
            try:
                seen = cached.get_attributes([Attribute.ID, Attribute.CLASS])
                if bytes(seen[Attribute.ID]) == wanted and seen[Attribute.CLASS] == ObjectClass.PRIVATE_KEY:
                    return cached
            except pkcs11.PKCS11Error as exc:
                _drop_frames(exc)
                if recovery_for(exc) not in (Recovery.NONE, Recovery.RELOAD_OBJECT):
                    raise
            del pooled.imports[object_id]
        try:
            private = pooled.session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=wanted)
        except pkcs11.NoSuchKey:
            # Not found because the token is gone for a moment (then the KEK is not visible either:
            # StaleTokenView, a 503) is not "the import token's key was destroyed" (a 404).
            self._find_kek(pooled.session, self.settings.kek_label)
            # Worth a line: a worker that cannot see a keypair another one made is the open
            # cross-worker question of docs/BENCHMARKS.md ("Open findings").
            log.warning("import key %s not found on the token", object_id)
            raise NotFound(
                "the import token's key is no longer on the HSM", reason=Reason.IMPORT_TOKEN_NOT_FOUND
            ) from None
        if len(pooled.imports) >= IMPORT_HANDLES_PER_SESSION:
            pooled.imports.clear()
        pooled.imports[object_id] = private
        return private

    def find_import_keypairs(self, id_prefix: str) -> list[str]:
        """Object ids of the import keypairs on the token whose id starts with `id_prefix`.

        PKCS#11 matches attributes exactly, so this reads every private key's label: only the
        import-keypair pool calls it, at start-up and now and then, to find the unused pooled
        keypairs of owners that are gone (core/keypair_pool.py).
        """
        prefix = IMPORT_LABEL_PREFIX + id_prefix

        def op(pooled: PooledSession) -> list[str]:
            self._find_kek(pooled.session, self.settings.kek_label)  # empty must mean "none", not "gone"
            labels = (
                obj[Attribute.LABEL]
                for obj in pooled.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            )
            return [label[len(IMPORT_LABEL_PREFIX) :] for label in labels if label.startswith(prefix)]

        return self._run("find-import-keypairs", op)

    def destroy_import_keypair(self, object_id: str) -> None:
        def op(pooled: PooledSession) -> None:
            for obj in list(pooled.session.get_objects({Attribute.ID: object_id.encode()})):
                obj.destroy()

        self._run("destroy-import-keypair", op)

    # -- import-keypair pool: claims and owner leases (core/keypair_pool.py) ---------------------

    def claim_import_keypair(self, object_id: str) -> None:
        """Relabel a pooled keypair that an import token now uses, so that no pool cleanup (of any
        process, whichever store it reads) counts it as an unused pooled keypair any more; its
        `CKA_ID`, by which imports and destruction find it, stays."""

        def op(pooled: PooledSession) -> None:
            found = list(
                pooled.session.get_objects(
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: object_id.encode()}
                )
            )
            if not found:
                self._find_kek(pooled.session, self.settings.kek_label)  # gone token: a 503
                raise NotFound("the pooled import keypair is no longer on the HSM")
            for obj in found:
                obj[Attribute.LABEL] = CLAIMED_LABEL_PREFIX + object_id

        self._run("claim-import-keypair", op)

    def _lease_template(self) -> dict[Attribute, Any]:
        """Leases are private data objects where the token keeps them (SoftHSM2, real HSMs), and
        otherwise generic-secret key objects, usable for nothing (NSS softoken keeps no token
        data objects: the capability probe's `token_data_objects`). Each key lease has a CKA_ID
        of its own (NSS replaces a token key stored with an existing CKA_ID), so they are found
        by class and type and told apart by their label."""
        if self._capabilities.token_data_objects:
            return {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: LEASE_APPLICATION}
        return {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET}

    def _create_lease(self, session: Any, owner: str, label: str) -> None:
        if self._capabilities.token_data_objects:
            session.create_object(
                {
                    **self._lease_template(),
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.MODIFIABLE: True,
                    Attribute.LABEL: label,
                    Attribute.VALUE: b"",
                }
            )
            return
        uses = (Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.SIGN, Attribute.VERIFY, Attribute.WRAP)
        session.generate_key(
            KeyType.GENERIC_SECRET,
            128,
            id=f"{LEASE_APPLICATION}:{owner}".encode(),
            label=label,
            store=True,
            template={
                **dict.fromkeys((*uses, Attribute.UNWRAP, Attribute.DERIVE), False),
                Attribute.PRIVATE: True,
                Attribute.MODIFIABLE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            },
        )

    def _pool_leases(self, session: Any) -> dict[str, tuple[Any, int]]:
        leases: dict[str, tuple[Any, int]] = {}
        for obj in list(session.get_objects(self._lease_template())):
            label = str(obj[Attribute.LABEL])
            if not label.startswith(LEASE_LABEL_PREFIX):
                continue
            owner, _, expires = label.removeprefix(LEASE_LABEL_PREFIX).rpartition("-")
            if owner and expires.isdigit():
                leases[owner] = (obj, int(expires))
        return leases

    def renew_pool_lease(self, owner: str, expires_at: int) -> bool:
        """Write `owner`'s lease (a private token object whose label carries the expiry,
        wall-clock seconds: SoftHSM2 refuses to change a data object's value) ; False when there
        was none, so it was created anew (a first lease, or one a cleaner removed as expired)."""

        def op(pooled: PooledSession) -> bool:
            label = f"{LEASE_LABEL_PREFIX}{owner}-{expires_at}"
            current = self._pool_leases(pooled.session).get(owner)
            if current is not None:
                current[0][Attribute.LABEL] = label
                return True
            self._find_kek(pooled.session, self.settings.kek_label)  # a vanished token is no missing lease
            self._create_lease(pooled.session, owner, label)
            return False

        return self._run("renew-pool-lease", op, retry_safe=False)

    def pool_leases(self) -> dict[str, int]:
        """Every pool owner's lease on the token: owner → expiry (wall-clock seconds)."""

        def op(pooled: PooledSession) -> dict[str, int]:
            self._find_kek(pooled.session, self.settings.kek_label)  # empty must mean "none", not "gone"
            return {owner: expires for owner, (_, expires) in self._pool_leases(pooled.session).items()}

        return self._run("pool-leases", op)

    def release_pool_lease(self, owner: str) -> None:
        def op(pooled: PooledSession) -> None:
            current = self._pool_leases(pooled.session).get(owner)
            if current is not None:
                current[0].destroy()

        self._run("release-pool-lease", op)

    def import_key(
        self,
        object_id: str,
        encrypted_key: bytes,
        oaep_hash: OaepHash,
        iv: bytes,
        encrypted_nonce: bytes,
    ) -> ImportedKey:
        caps = self._capabilities
        native = (oaep_hash is OaepHash.SHA1 and caps.rsa_oaep_sha1) or (
            oaep_hash is OaepHash.SHA256 and caps.rsa_oaep_sha256
        )
        if not native and not (oaep_hash is OaepHash.SHA256 and caps.oaep_sha256_available):
            raise Unsupported(f"the HSM cannot unwrap RSA-OAEP with {oaep_hash.value.upper()}")
        if len(iv) != 12:
            raise InvalidInput("the IV must be 12 bytes", reason=Reason.INCORRECT_NONCE_IV, target="iv")

        def op(pooled: PooledSession) -> ImportedKey:
            private = self._import_private_key(pooled, object_id)
            try:
                key = (
                    self._oaep_unwrap(private, encrypted_key, oaep_hash)
                    if native
                    else self._raw_rsa_unwrap(pooled, private, encrypted_key)
                )
            except pkcs11.PKCS11Error as exc:
                if recovery_for(exc) is not Recovery.NONE:
                    raise
                raise IntegrityError(
                    "the encrypted key could not be decrypted with the import token"
                ) from None
            try:
                try:
                    nonce = bytes(
                        key.decrypt(
                            encrypted_nonce, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv)
                        )
                    )
                except pkcs11.PKCS11Error as exc:
                    if recovery_for(exc) is not Recovery.NONE:
                        raise
                    # Also what an AES key of a length other than 16/24/32 gets: GCM refuses it.
                    raise IntegrityError(
                        "the encrypted nonce does not open with the imported key and IV",
                        reason=Reason.INCORRECT_NONCE_IV,
                    ) from None
                wrapped = self._wrap_unwrapped(
                    pooled, key, "the encrypted key could not be decrypted with the import token"
                )
                return ImportedKey(wrapped, nonce)
            finally:
                key.destroy()

        return self._run("import-key", op)

    def import_wrapped_key(self, object_id: str, encrypted_key: bytes, wrapping: KeyWrapping) -> WrappedKey:
        caps = self._capabilities
        oaep_hash = _WRAPPING_OAEP.get(wrapping)
        native = (oaep_hash is OaepHash.SHA1 and caps.rsa_oaep_sha1) or (
            oaep_hash is OaepHash.SHA256 and caps.rsa_oaep_sha256
        )
        if oaep_hash is OaepHash.SHA256 and not native and not caps.oaep_sha256_available:
            raise Unsupported("the HSM cannot unwrap RSA-OAEP with SHA256")
        if oaep_hash is OaepHash.SHA1 and not native:
            raise Unsupported("the HSM cannot unwrap RSA-OAEP with SHA1")
        failed = "the encrypted key material could not be decrypted with the import parameters"

        def op(pooled: PooledSession) -> WrappedKey:
            private = self._import_private_key(pooled, object_id)
            try:
                if oaep_hash is None:
                    key = private.unwrap_key(
                        ObjectClass.SECRET_KEY,
                        KeyType.AES,
                        encrypted_key,
                        mechanism=Mechanism.RSA_PKCS,
                        store=False,
                        template=self._transient_template(),
                    )
                elif native:
                    key = self._oaep_unwrap(private, encrypted_key, oaep_hash)
                else:
                    key = self._raw_rsa_unwrap(pooled, private, encrypted_key)
            except pkcs11.PKCS11Error as exc:
                if recovery_for(exc) is not Recovery.NONE:
                    raise
                raise IntegrityError(failed) from None
            try:
                return self._wrap_unwrapped(pooled, key, failed)
            finally:
                key.destroy()

        return self._run("import-wrapped-key", op)

    def _wrap_unwrapped(self, pooled: PooledSession, key: Any, failed: str) -> WrappedKey:
        """An RSA-unwrapped AES key in its storage form, under the configured KEK."""
        blob = self.kwp_wrap(self._kek(pooled), key)
        # SoftHSM2 leaves CKA_VALUE_LEN at 0 on unwrapped keys; for 16/24/32-byte keys the
        # RFC 5649 output is exactly 8 bytes longer than the key.
        length = len(blob) - 8
        if length not in AES_LENGTHS:
            raise IntegrityError(failed)
        return WrappedKey(
            blob=blob, length=length, kek_label=self.settings.kek_label, kind=MaterialKind.AES.value
        )

    def _oaep_unwrap(self, private: Any, encrypted_key: bytes, oaep_hash: OaepHash) -> Any:
        mech, mgf, _ = _OAEP[oaep_hash]
        return private.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            encrypted_key,
            mechanism=Mechanism.RSA_PKCS_OAEP,
            mechanism_param=(mech, mgf, None),
            store=False,
            template=self._transient_template(decrypt=True),
        )

    def _raw_rsa_unwrap(self, pooled: PooledSession, private: Any, encrypted_key: bytes) -> Any:
        """The documented OAEP-SHA256 fallback: raw RSA in the HSM, constant-time OAEP here."""
        k = len(private[Attribute.MODULUS])
        if len(encrypted_key) != k:
            raise IntegrityError("the encrypted key could not be decrypted with the import token")
        em = bytearray(private.decrypt(encrypted_key, mechanism=Mechanism.RSA_X_509).rjust(k, b"\x00"))
        try:
            material = oaep_decode(em, k=k, hash_name="sha256")
        finally:
            wipe(em)
        try:
            if len(material) not in AES_LENGTHS:
                raise IntegrityError("the encrypted key could not be decrypted with the import token")
            return pooled.session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.VALUE: bytes(material),
                    **self._transient_template(decrypt=True),
                }
            )
        finally:
            wipe(material)

    # -- CryptoBackend: pushing to cloud KMSs (hsm/export.py) ---------------------------------------

    def key_check_value(self, wrapped: WrappedKey) -> bytes:
        return export.key_check_value(self, wrapped)

    def export_wrappings(self) -> dict[ExportWrapping, bool]:
        return export.export_wrappings(self)

    def wrap_for_export(self, wrapped: WrappedKey, public_key_der: bytes, wrapping: ExportWrapping) -> bytes:
        return export.wrap_for_export(self, wrapped, public_key_der, wrapping)

    def close(self) -> None:
        self.health.close()
        try:
            with self.library.calls():
                with self.pool.login_lock:
                    self._destroy_cached(self.cache.clear())
                self.pool.close()
        except HsmUnavailable:
            log.warning("HSM backend closed while the module was being re-initialised")
