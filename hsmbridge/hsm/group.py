"""An HSM group: one `CryptoBackend` over several tokens that hold the same master KEK.

Production HSMs run as groups (Luna HA groups, nShield Security Worlds, CloudHSM clusters), and a
daemon with one token has no answer when that token fails. `Pkcs11Group` keeps one
`Pkcs11Backend` per member (each with its own session pool and handle cache), sends every
request to the first healthy member in configured order, and moves new requests to the next
healthy one as soon as a member fails: on the failing request itself, or within one
`health_interval` when a background check finds it first. A request whose member fails is
retried once on another member when that is safe: every operation here that creates only
transient session objects (envelope crypto, key generation and wrapping, which return material
the caller has not stored yet). Creating an import keypair persists a token object on one
member, so it is never repeated elsewhere.

A member's outage is healed by that member's own recovery (hsm/recovery.py, `HsmHealth`): the
failure that took it out starts it, and it re-initialises the module with capped backoff, fenced
and drained (hsm/library.py), for as long as it takes. The group only routes: it sends nothing to
a member whose backend is not `healthy`, asks each serving member `check()` every
`health_interval` (which notices a token that vanished while no request came, and starts that
member's recovery), and takes a member back once its backend is healthy again and its KEK check
value still matches the group's. Members of one module share its initialisation: a member whose
token is gone re-initialises a module its siblings serve from at most once per
`recovery_interval` (`RecoveryPolicy.shared_reinit_interval`); the siblings' calls in flight are
drained first, and they log in again and reload their keys on their next checkout.

Every member must hold the same master KEK. It is fingerprinted by wrapping a fixed value under
it with RFC 5649 (deterministic, and portable to any token that can wrap at all): a member whose
fingerprint differs is refused at start with a message naming both; one that comes back with a
different KEK stays out of service ("refused").

Import keypairs live on the member that made them: an import tries the healthy members until
one has the key, and says "unavailable", not "not found", while a member that may hold it is
down.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pkcs11

from hsmbridge.core.backend import (
    Capabilities,
    ExportWrapping,
    HsmInfo,
    ImportedKey,
    KeyRef,
    MaterialKind,
    OaepHash,
    TokenHealth,
)
from hsmbridge.core.model import WrappedKey
from hsmbridge.errors import (
    HsmBridgeError,
    HsmUnavailable,
    InternalError,
    InvalidInput,
    NotFound,
    Reason,
)
from hsmbridge.hsm.backend import Pkcs11Backend, Pkcs11Settings
from hsmbridge.hsm.errors import to_domain
from hsmbridge.hsm.library import RETRY_AFTER, Fenced, Pkcs11Library
from hsmbridge.hsm.pool import lookup_token

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Wrapped under each member's KEK to fingerprint it (RFC 5649 is deterministic).
KEK_CHECK_VALUE = b"hsmbridge master KEK check value"

#: Errors that say something about the member, not about the request: worth another member.
_MEMBER_FAULTS = (HsmUnavailable, InternalError, NotFound)


def _is_member_fault(exc: HsmBridgeError) -> bool:
    if not isinstance(exc, _MEMBER_FAULTS):
        return False
    # A full session pool is back-pressure, not a failure; a missing import key is an answer.
    return exc.reason not in (Reason.RESOURCE_EXHAUSTED, Reason.IMPORT_TOKEN_NOT_FOUND)


def kek_check_value(backend: Pkcs11Backend) -> str:
    """The fingerprint of `backend`'s configured master KEK (see the module docstring)."""
    blob = backend.wrap_material(MaterialKind.SECRET, KEK_CHECK_VALUE).blob
    return hashlib.sha256(blob).hexdigest()[:16]


def member_name(settings: Pkcs11Settings) -> str:
    return settings.token_label or f"slot {settings.slot_id}"


@dataclass
class _Member:
    name: str
    settings: Pkcs11Settings
    backend: Pkcs11Backend | None = None
    state: str = "down"
    kek_check: str = ""
    failures: int = 0
    last_error: str = ""
    next_check: float = 0.0

    @property
    def up(self) -> bool:
        """In service: taken in by the group, and its backend is not recovering."""
        return self.state == "up" and self.backend is not None and self.backend.healthy


class _GroupHealth:
    """The group's answer to liveness (daemon.check_live): wedged only when no member serves and a
    member's recovery is wedged; a restart cannot help while another member serves."""

    def __init__(self, members: Sequence[_Member]) -> None:
        self._members = members

    @property
    def wedged(self) -> bool:
        if any(m.up for m in self._members):
            return False
        return any(m.backend is not None and m.backend.health.wedged for m in self._members)


def member_settings(settings: Pkcs11Settings, recovery_interval: float) -> Pkcs11Settings:
    """A member's own recovery, tuned for a group. A request that saw its member fail does not
    wait for that member's first recovery attempt (`caller_wait` 0): the group retries it on
    another member at once. And a member whose token is gone re-initialises the module its
    siblings serve from once per `recovery_interval` rather than every 10 s: some modules
    (SoftHSM2) show a returned token only after `C_Initialize`."""
    return replace(
        settings,
        recovery=replace(settings.recovery, caller_wait=0.0, shared_reinit_interval=recovery_interval),
    )


class Pkcs11Group:
    """`CryptoBackend` over several `Pkcs11Backend` members holding one master KEK."""

    def __init__(
        self,
        members: Sequence[Pkcs11Settings],
        *,
        create_kek: bool = False,
        health_interval: float = 0.25,
        recovery_interval: float = 1.0,
    ) -> None:
        if len(members) < 1:
            raise InvalidInput("an HSM group needs at least one token")
        names = [member_name(s) for s in members]
        if len(set(names)) != len(names):
            raise InvalidInput(f"the HSM group lists a token twice: {', '.join(names)}")
        labels = {s.kek_label for s in members}
        if len(labels) != 1:
            raise InvalidInput("every token of an HSM group must use the same `hsm.kek_label`")
        self.settings = members[0]
        self.health_interval = health_interval
        self.recovery_interval = recovery_interval
        self._members = [
            _Member(name, member_settings(s, recovery_interval))
            for name, s in zip(names, members, strict=True)
        ]
        self.health = _GroupHealth(self._members)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._import_owner: dict[str, _Member] = {}
        self._group_check = ""
        try:
            self._start(create_kek)
        except BaseException:
            self._close_members()
            raise
        self._thread = threading.Thread(target=self._watch, name="hsm-group-health", daemon=True)
        self._thread.start()

    # -- start-up --------------------------------------------------------------------------------

    def _start(self, create_kek: bool) -> None:
        reasons = []
        for member in self._members:
            try:
                member.backend = Pkcs11Backend(member.settings, create_kek=create_kek)
                member.kek_check = kek_check_value(member.backend)
            except (HsmUnavailable, NotFound, pkcs11.PKCS11Error) as exc:
                # A member that is down at start joins when it comes up: a restart during an
                # outage must not take the whole group down.
                reasons.append(f"{member.name}: {type(exc).__name__}")
                self._out_of_service(member, exc)
                continue
            first = next((m for m in self._members if m.kek_check and m is not member), None)
            if first is not None and first.kek_check != member.kek_check:
                raise InvalidInput(
                    f"HSM group token {member.name!r} holds a different master KEK "
                    f"{member.settings.kek_label!r} than token {first.name!r} (key check value "
                    f"{member.kek_check} != {first.kek_check}): put the same KEK on every token "
                    "(docs/operating.md, HSM groups)"
                )
            member.state = "up"
        up = [m for m in self._members if m.up]
        if not up:
            raise HsmUnavailable(f"no token of the HSM group is available ({'; '.join(reasons)})")
        self._group_check = up[0].kek_check
        caps = {m.backend.capabilities() for m in up if m.backend is not None}
        if len(caps) > 1:
            log.warning("HSM group members differ in capabilities; using what all of them can do")
        self._capabilities = up[0].backend.capabilities() if len(caps) == 1 else _common(caps)  # type: ignore[union-attr]
        log.info(
            "HSM group: %s",
            ", ".join(f"{m.name} {m.state} (KEK check {m.kek_check or '?'})" for m in self._members),
        )

    # -- health ------------------------------------------------------------------------------------

    def _out_of_service(self, member: _Member, exc: BaseException) -> None:
        """Stop routing to `member`. Its own recovery heals it (a device-level failure started it);
        `_take_back` returns it to service."""
        with self._lock:
            was_up = member.state == "up"
            if member.state != "refused":
                member.state = "down"
            member.last_error = type(exc).__name__
            # The first look comes at once: a member hit only by a neighbour's re-initialisation
            # of the module they share is healthy again by its next checkout.
            member.next_check = time.monotonic()
            if was_up:
                member.failures += 1
        if was_up:
            log.warning("HSM group: token %s out of service (%s: %s)", member.name, member.last_error, exc)
            self._wake.set()

    @staticmethod
    def _check(member: _Member) -> bool:
        """The member's own health check (`Pkcs11Backend.check`: one C_FindObjects for the KEK,
        asked twice on SoftHSM2's one-off CKR_GENERAL_ERROR); a failed one starts its recovery."""
        backend = member.backend
        assert backend is not None
        return backend.check()

    def _watch(self) -> None:
        while not self._closed.is_set():
            # serving members are checked every health_interval; one out of service is looked at
            # every recovery_interval, so that it is taken back soon after its recovery succeeds
            out = any(m.state == "down" for m in self._members)
            self._wake.wait(
                min(self.health_interval, self.recovery_interval) if out else self.health_interval
            )
            self._wake.clear()
            for member in self._members:
                if self._closed.is_set():
                    return
                if member.up:
                    if not self._check(member):
                        self._out_of_service(member, HsmUnavailable("health check failed"))
                elif member.state == "up":
                    # its backend is recovering: counted and logged as out of service meanwhile
                    self._out_of_service(member, HsmUnavailable("recovering"))
                elif member.state == "down" and time.monotonic() >= member.next_check:
                    self._take_back(member)

    def _take_back(self, member: _Member) -> None:
        """Return a member to service once its backend is healthy and holds the group's KEK. A
        member that was down at start has no backend yet: building one is its recovery."""
        member.next_check = time.monotonic() + self.recovery_interval
        try:
            if member.backend is None:
                member.backend = Pkcs11Backend(member.settings)
            if not member.backend.healthy or not self._check(member):
                return  # still recovering (hsm/recovery.py), or its check just restarted that
            check = kek_check_value(member.backend)
        except (HsmBridgeError, pkcs11.PKCS11Error) as exc:
            member.last_error = type(exc).__name__
            return
        with self._lock:
            member.kek_check = check
            if self._group_check and check != self._group_check:
                member.state = "refused"
                log.error(
                    "HSM group: token %s came back with a different master KEK (key check value %s != %s); "
                    "it stays out of service",
                    member.name,
                    check,
                    self._group_check,
                )
                return
            self._group_check = self._group_check or check
            member.state = "up"
        log.warning("HSM group: token %s back in service", member.name)

    # -- group health: readiness and liveness (daemon.check_ready / check_live) --------------------

    @property
    def healthy(self) -> bool:
        """Some member serves (no HSM call)."""
        return bool(self._candidates())

    def check(self) -> bool:
        """Some member serves, confirmed by its own health check (see `_check`)."""
        for member in self._candidates():
            if self._check(member):
                return True
            self._out_of_service(member, HsmUnavailable("health check failed"))
        return False

    # -- routing -----------------------------------------------------------------------------------

    def _candidates(self) -> list[_Member]:
        with self._lock:
            return [m for m in self._members if m.up]

    def _unavailable(self) -> HsmUnavailable:
        """Every member down: retryable, after about one take-back attempt (`recovery_interval`),
        the same `Retry-After` / RetryInfo a single token's outage answers with."""
        states = ", ".join(f"{m.name} {m.state}" for m in self._members)
        return HsmUnavailable(
            f"no token of the HSM group is available ({states})",
            metadata={RETRY_AFTER: str(max(1, math.ceil(self.recovery_interval)))},
        )

    def _call(self, operation: str, fn: Callable[[Pkcs11Backend], T], *, retry_safe: bool = True) -> T:
        """Run `fn` on the first healthy member; on a member fault, take that member out and, when
        `retry_safe`, run it once more on the next healthy one."""
        tried: list[_Member] = []
        while True:
            member = next((m for m in self._candidates() if m not in tried), None)
            if member is None:
                raise self._unavailable()
            backend = member.backend
            assert backend is not None
            try:
                return fn(backend)
            except pkcs11.PKCS11Error as exc:  # from a session checkout, before the backend maps it
                error: HsmBridgeError = to_domain(exc, operation)
            except HsmBridgeError as exc:
                error = exc
            if not _is_member_fault(error):
                raise error
            if not isinstance(error, Fenced):
                # a fence (the shared module being re-initialised for a sibling) is no fault of
                # this member's: the request moves on, the member stays in service
                self._out_of_service(member, error)
            tried.append(member)
            if not retry_safe or len(tried) > 1:
                raise error
            log.info("HSM group: %s retried on another token after %s on %s", operation, error, member.name)

    def _each_up(self, fn: Callable[[Pkcs11Backend], T]) -> list[T]:
        results = []
        for member in self._candidates():
            assert member.backend is not None
            try:
                results.append(fn(member.backend))
            except pkcs11.PKCS11Error as exc:
                self._out_of_service(member, exc)
            except HsmBridgeError as exc:
                if not _is_member_fault(exc):
                    raise
                self._out_of_service(member, exc)
        return results

    # -- CryptoBackend -----------------------------------------------------------------------------

    def status(self) -> tuple[TokenHealth, ...]:
        with self._lock:
            active = next((m for m in self._members if m.up), None)
            return tuple(
                TokenHealth(
                    name=m.name,
                    module=m.settings.module,
                    token_label=m.settings.token_label or "",
                    state="up" if m.up else ("refused" if m.state == "refused" else "down"),
                    active=m is active,
                    kek_check=m.kek_check,
                    failures=m.failures,
                    last_error=m.last_error,
                )
                for m in self._members
            )

    def info(self) -> HsmInfo:
        member = next(iter(self._candidates()), None) or next(m for m in self._members if m.backend)
        assert member.backend is not None
        return replace(member.backend.info(), capabilities=self._capabilities, tokens=self.status())

    def capabilities(self) -> Capabilities:
        return self._capabilities

    def random(self, length: int) -> bytes:
        return self._call("generate-random", lambda b: b.random(length))

    def ensure_kek(self, label: str, *, create: bool) -> bool:
        """Readiness asks this: the KEK must be found on the member that serves."""
        if create:
            raise InvalidInput("an HSM group never creates a master KEK: put the same KEK on every token")
        return self._call("ensure-kek", lambda b: b.ensure_kek(label, create=False))

    def generate_key(self, kind: MaterialKind, length: int) -> WrappedKey:
        # Safe to repeat: the result exists only in this answer until the caller stores it.
        return self._call("generate-key", lambda b: b.generate_key(kind, length))

    def wrap_material(self, kind: MaterialKind, material: bytes | bytearray) -> WrappedKey:
        return self._call("wrap-material", lambda b: b.wrap_material(kind, material))

    def rewrap(self, wrapped: WrappedKey, kek_label: str) -> WrappedKey:
        return self._call("rewrap", lambda b: b.rewrap(wrapped, kek_label))

    def reveal_secret(self, wrapped: WrappedKey) -> bytearray:
        return self._call("reveal-secret", lambda b: b.reveal_secret(wrapped))

    def gcm_encrypt(self, key: KeyRef, plaintext: bytes | bytearray, aad: bytes) -> tuple[bytes, bytes]:
        # A retry draws a fresh IV from the other member's RNG: never the same IV twice.
        return self._call("gcm-encrypt", lambda b: b.gcm_encrypt(key, plaintext, aad))

    def gcm_decrypt(self, key: KeyRef, iv: bytes, ciphertext: bytes, aad: bytes) -> bytearray:
        return self._call("gcm-decrypt", lambda b: b.gcm_decrypt(key, iv, ciphertext, aad))

    def gcm_encrypt_many(
        self, key: KeyRef, items: Sequence[tuple[bytes | bytearray, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        return self._call("gcm-encrypt", lambda b: b.gcm_encrypt_many(key, items))

    def gcm_decrypt_many(
        self, items: Sequence[tuple[KeyRef, bytes, bytes, bytes]]
    ) -> list[bytearray | HsmBridgeError]:
        return self._call("gcm-decrypt", lambda b: b.gcm_decrypt_many(items))

    # Pushing material to a cloud KMS (hsm/export.py): transient session objects only, so each is
    # safe to repeat on another member.
    def key_check_value(self, wrapped: WrappedKey) -> bytes:
        return self._call("key-check-value", lambda b: b.key_check_value(wrapped))

    def export_wrappings(self) -> dict[ExportWrapping, bool]:
        return self._call("export-wrappings", lambda b: b.export_wrappings())

    def wrap_for_export(self, wrapped: WrappedKey, public_key_der: bytes, wrapping: ExportWrapping) -> bytes:
        return self._call("wrap-for-export", lambda b: b.wrap_for_export(wrapped, public_key_der, wrapping))

    def evict(self, version_ids: Sequence[str]) -> None:
        for member in self._members:
            if member.backend is not None:
                member.backend.evict(version_ids)

    # -- import keypairs: token objects on one member ----------------------------------------------

    def create_import_keypair(self, object_id: str, bits: int) -> bytes:
        owner: list[_Member] = []

        def create(backend: Pkcs11Backend) -> bytes:
            owner[:] = [m for m in self._members if m.backend is backend]
            return backend.create_import_keypair(object_id, bits)

        # Never repeated on another member: the keypair may exist on the one that failed.
        der = self._call("create-import-keypair", create, retry_safe=False)
        with self._lock:
            self._import_owner[object_id] = owner[0]
        return der

    def _owners_first(self, object_id: str) -> list[_Member]:
        with self._lock:
            owner = self._import_owner.get(object_id)
        candidates = self._candidates()
        return sorted(candidates, key=lambda m: m is not owner)

    def import_key(
        self,
        object_id: str,
        encrypted_key: bytes,
        oaep_hash: OaepHash,
        iv: bytes,
        encrypted_nonce: bytes,
    ) -> ImportedKey:
        for member in self._owners_first(object_id):
            assert member.backend is not None
            try:
                return member.backend.import_key(object_id, encrypted_key, oaep_hash, iv, encrypted_nonce)
            except NotFound as exc:
                if exc.reason is not Reason.IMPORT_TOKEN_NOT_FOUND:
                    self._out_of_service(member, exc)
            except HsmUnavailable as exc:
                if exc.reason is Reason.RESOURCE_EXHAUSTED:
                    raise
                self._out_of_service(member, exc)
            except pkcs11.PKCS11Error as exc:
                self._out_of_service(member, exc)
        if any(not m.up for m in self._members):
            raise HsmUnavailable(
                "the import token's key is on no available HSM token; a token that may hold it is down"
            )
        raise NotFound("the import token's key is no longer on the HSM", reason=Reason.IMPORT_TOKEN_NOT_FOUND)

    def destroy_import_keypair(self, object_id: str) -> None:
        # Wherever it is; a member that is down keeps an orphan the keypair pool sweeps later.
        self._each_up(lambda b: b.destroy_import_keypair(object_id))
        with self._lock:
            self._import_owner.pop(object_id, None)

    def find_import_keypairs(self, id_prefix: str) -> list[str]:
        found: set[str] = set()
        for ids in self._each_up(lambda b: b.find_import_keypairs(id_prefix)):
            found.update(ids)
        return sorted(found)

    # -- shutdown ----------------------------------------------------------------------------------

    def _close_members(self) -> None:
        for member in self._members:
            if member.backend is not None:
                try:
                    member.backend.close()
                except (HsmBridgeError, pkcs11.PKCS11Error) as exc:
                    log.warning("HSM group: closing token %s failed (%s)", member.name, type(exc).__name__)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._close_members()


def import_shared_kek(members: Sequence[Pkcs11Settings]) -> bool:
    """Development and test groups on SoftHSM2 only: put one new master KEK on every token.

    A real HSM group gets its KEK onto each member with the vendor's own tools (Luna HA
    replication, an nShield Security World, CloudHSM cluster sync): the KEK is never extractable,
    so hsmbridge cannot copy it. Here the value is drawn once, imported into each token with
    `C_CreateObject` and the attributes `hsmbridge init` gives a generated KEK, then wiped.
    Returns False (and changes nothing) when every token already has the KEK; refuses when only
    some do, since their KEK cannot be copied to the others.
    """
    from hsmbridge.core.backend import wipe
    from hsmbridge.hsm.backend import KEK_ATTRIBUTES

    label = members[0].kek_label
    template = {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY, pkcs11.Attribute.LABEL: label}
    sessions = []
    try:
        for settings in members:
            library = Pkcs11Library.load(settings.module, settings.init_args)
            token = _token_of(library, settings)
            sessions.append(token.open(rw=True, user_pin=settings.pin))
        have = [bool(list(s.get_objects(template))) for s in sessions]
        if all(have):
            return False
        if any(have):
            named = ", ".join(member_name(m) for m, h in zip(members, have, strict=True) if h)
            raise InvalidInput(
                f"only some tokens of the HSM group hold the master KEK {label!r} ({named}): copy it to "
                "the others with the HSM's own tools; hsmbridge cannot (the KEK is not extractable)"
            )
        material = bytearray(os.urandom(32))
        try:
            for session in sessions:
                session.create_object(
                    {
                        **template,
                        pkcs11.Attribute.KEY_TYPE: pkcs11.KeyType.AES,
                        pkcs11.Attribute.VALUE: bytes(material),
                        **KEK_ATTRIBUTES,
                    }
                )
        finally:
            wipe(material)
        log.info("imported one new master KEK %r into %d tokens", label, len(sessions))
        return True
    finally:
        for session in reversed(sessions):
            with contextlib.suppress(pkcs11.PKCS11Error):
                session.close()


def _token_of(library: Pkcs11Library, settings: Pkcs11Settings) -> Any:
    try:
        return lookup_token(library, slot_id=settings.slot_id, token_label=settings.token_label)
    except pkcs11.NoSuchToken:
        if settings.slot_id is not None:
            raise NotFound(f"no token present in PKCS#11 slot {settings.slot_id}") from None
        raise NotFound(f"no PKCS#11 token labelled {settings.token_label!r}") from None


def _common(caps: set[Capabilities]) -> Capabilities:
    """What every member can do (fields are all booleans)."""
    fields = Capabilities.__dataclass_fields__
    return Capabilities(**{name: all(getattr(c, name) for c in caps) for name in fields})
