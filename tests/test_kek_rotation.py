"""Master KEK rotation (hsmbridge/kek_rotation.py) against the real SoftHSM2 token.

Every test gets its own pair of KEK labels, so destroying the "old" KEK never touches the
session-wide backend's KEK, and both are removed from the shared token afterwards. The session
backend (`hsm_backend`) is requested first so that it, not these short-lived backends, owns the
token login (closing a backend that logged in would log the whole process out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from pkcs11 import Attribute, ObjectClass
from services import build_services, call_context, clock_of, encrypt_for_import, new_store, new_tenant

from hsmbridge.core.backend import MaterialKind
from hsmbridge.core.clock import FixedClock
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import KeyVersion
from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import Store
from hsmbridge.errors import InternalError, Unsupported
from hsmbridge.hsm.backend import Pkcs11Backend, Pkcs11Settings
from hsmbridge.kek_rotation import RotationProgress, format_progress, rotate_master_kek

pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]


def _destroy_kek(backend: Pkcs11Backend, label: str) -> int:
    """What an HSM administrator does with the vendor's tools once rotation is complete.

    Through the backend's retry loop: SoftHSM2 may fail the first object search after another
    session closed with CKR_GENERAL_ERROR, once (docs/hsm.md)."""

    def destroy(pooled: Any) -> int:
        template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}
        found = list(pooled.session.get_objects(template))
        for obj in found:
            obj.destroy()
        return len(found)

    return backend._run("test-destroy-kek", destroy)


@dataclass
class Keks:
    old: str
    new: str
    settings: Pkcs11Settings


@pytest.fixture
def keks(hsm_backend: Pkcs11Backend, hsm_settings: Pkcs11Settings) -> Iterator[Keks]:
    suffix = uuid.uuid4().hex[:12]
    old, new = f"test-kek-old-{suffix}", f"test-kek-new-{suffix}"
    yield Keks(old, new, replace(hsm_settings, kek_label=old, pool_size=4))
    for label in (old, new):
        _destroy_kek(hsm_backend, label)


def _backend(settings: Pkcs11Settings, label: str | None = None, *, create: bool = False) -> Pkcs11Backend:
    return Pkcs11Backend(replace(settings, kek_label=label or settings.kek_label), create_kek=create)


@dataclass
class Estate:
    """What a tenant has before the rotation, and what must still hold after it."""

    ctx: CallContext
    #: (key id, ciphertext, the DEK it wraps), one per root-key version
    ciphertexts: list[tuple[str, bytes, bytes]]
    #: standard key id → its payload
    payloads: dict[str, bytes]


def _populate(services: Services, *, rotations: int = 2) -> Estate:
    """A generated root key and two imported ones (plain and secure import), each rotated
    `rotations` times with a DEK wrapped under every version, and standard keys whose payloads
    are 32 bytes and 13 bytes (SoftHSM2 keeps RFC 5649 padding on the latter)."""
    ctx = call_context(new_tenant())
    clock = clock_of(services)
    estate = Estate(ctx, [], {})
    generated = services.keys.create(ctx, KeySpec(name="generated-root"))
    plain = services.keys.create(ctx, KeySpec(name="plain-import", payload=os.urandom(32)))
    services.import_tokens.create(ctx, key_bits=2048)
    client = encrypt_for_import(services.import_tokens.retrieve(ctx))
    secure = services.keys.create(ctx, KeySpec(name="secure-import", secure_import=client.request))
    for round_ in range(rotations + 1):
        if round_:
            clock.advance(hours=2)
            services.keys.rotate(ctx, generated.id)
            services.keys.rotate(ctx, plain.id, payload=os.urandom(32))
            services.import_tokens.create(ctx, key_bits=2048)
            again = encrypt_for_import(services.import_tokens.retrieve(ctx))
            services.keys.rotate(ctx, secure.id, secure_import=again.request)
        for key in (generated, plain, secure):
            dek = os.urandom(32)
            sealed = services.envelopes.wrap(ctx, key.id, dek, aad=["orders"])
            estate.ciphertexts.append((key.id, sealed.ciphertext, dek))
    for size in (32, 13):
        payload = os.urandom(size)
        key = services.keys.create(ctx, KeySpec(name=f"standard-{size}", extractable=True, payload=payload))
        estate.payloads[key.id] = payload
    # The import keypairs are token objects: leave none behind on the shared token.
    clock.advance(hours=1)
    services.import_tokens.sweep_expired()
    return estate


def _all_versions(store: Store, estate: Estate) -> list[KeyVersion]:
    key_ids = {key_id for key_id, _, _ in estate.ciphertexts} | set(estate.payloads)
    return [v for key_id in key_ids for v in store.list_versions(estate.ctx.tenant, key_id)]


def _assert_everything_opens(services: Services, estate: Estate) -> None:
    """Every ciphertext unwraps and every payload reveals, with the HSM handle cache emptied
    first, so each version really is unwrapped from its stored (rewrapped) blob."""
    services.backend.evict([v.id for v in _all_versions(services.store, estate)])
    for key_id, ciphertext, dek in estate.ciphertexts:
        opened = services.envelopes.unwrap(estate.ctx, key_id, ciphertext, aad=["orders"])
        assert bytes(opened.plaintext) == dek
    for key_id, payload in estate.payloads.items():
        key = services.keys.get(estate.ctx, key_id)
        assert bytes(services.keys.payload(estate.ctx, key)) == payload


def _fresh_services(backend: Pkcs11Backend, store: Store, clock: FixedClock | None = None) -> Services:
    """A daemon that starts now: no version cached in memory yet."""
    return build_services(backend, store=store, clock=clock)


def test_rotation_rewraps_every_version_and_the_old_kek_can_then_be_destroyed(keks: Keks) -> None:
    old_backend = _backend(keks.settings, create=True)
    store = new_store()
    services = build_services(old_backend, store=store)
    try:
        estate = _populate(services)
        before = {v.id: v for v in _all_versions(store, estate)}
        assert len(before) == 3 * 3 + 2
        assert {v.wrapped.kek_label for v in before.values()} == {keks.old}

        seen: list[RotationProgress] = []
        report = rotate_master_kek(services, keks.new, progress=seen.append, progress_every=0, batch_size=4)

        assert report.created_kek and report.complete
        assert report.total == report.rewrapped == len(before)
        assert report.by_kek == {keks.new: len(before)}
        assert seen[-1].done == seen[-1].total == len(before) and len(seen) >= 3
        assert "11/11 versions (100%)" in format_progress(seen[-1])
        for version in _all_versions(store, estate):
            old = before[version.id]
            assert version.wrapped.kek_label == keks.new and version.wrapped.blob != old.wrapped.blob
            assert (version.wrapped.length, version.wrapped.kind) == (old.wrapped.length, old.wrapped.kind)
            assert (version.number, version.created_at) == (old.number, old.created_at)

        # The running daemon (still configured with the old label) keeps working, from a cold
        # cache, with the old KEK still there...
        _assert_everything_opens(_fresh_services(old_backend, store), estate)
        # ...and so does a daemon switched to the new label, also after the old KEK is destroyed.
        new_backend = _backend(keks.settings, keks.new)
        try:
            assert _destroy_kek(new_backend, keks.old) == 1
            switched = _fresh_services(new_backend, store, clock_of(services))
            _assert_everything_opens(switched, estate)
            root = next(iter(estate.ciphertexts))[0]
            clock_of(switched).advance(hours=3)
            switched.keys.rotate(estate.ctx, root)
            fresh = switched.envelopes.wrap(estate.ctx, root, b"k" * 32)
            assert bytes(switched.envelopes.unwrap(estate.ctx, root, fresh.ciphertext).plaintext) == b"k" * 32
            assert store.count_versions_by_kek() == {keks.new: len(before) + 1}
            # Running it again finds nothing to do.
            again = rotate_master_kek(switched, keks.new)
            assert again.complete and not again.created_kek and again.total == again.rewrapped == 0
        finally:
            new_backend.close()
    finally:
        store.close()
        old_backend.close()


def test_an_interrupted_rotation_resumes_where_it_stopped(keks: Keks) -> None:
    backend = _backend(keks.settings, create=True)
    store = new_store()
    services = build_services(backend, store=store)
    try:
        estate = _populate(services, rotations=1)
        total = len(_all_versions(store, estate))
        stop = threading.Event()

        def stop_after_first_batch(progress: RotationProgress) -> None:
            if progress.done:
                stop.set()

        first = rotate_master_kek(
            (store, backend),
            keks.new,
            progress=stop_after_first_batch,
            progress_every=0,
            batch_size=3,
            stop=stop,
        )
        assert first.interrupted and not first.complete
        assert first.rewrapped == 3 and first.remaining == total - 3
        assert first.by_kek == {keks.old: total - 3, keks.new: 3}
        # Half-rotated: both KEKs in use at once, everything still opens.
        _assert_everything_opens(_fresh_services(backend, store), estate)

        # Versions created meanwhile under the old KEK are picked up by the next run too.
        clock_of(services).advance(hours=2)
        services.keys.rotate(estate.ctx, estate.ciphertexts[0][0])

        second = rotate_master_kek((store, backend), keks.new, batch_size=3)
        assert second.complete and not second.created_kek
        assert second.total == second.rewrapped == total - 3 + 1
        assert store.count_versions_by_kek() == {keks.new: total + 1}
        _destroy_kek(backend, keks.old)
        new_backend = _backend(keks.settings, keks.new)
        try:
            _assert_everything_opens(_fresh_services(new_backend, store), estate)
        finally:
            new_backend.close()
    finally:
        store.close()
        backend.close()


def test_create_only_makes_the_kek_and_rewraps_nothing(keks: Keks) -> None:
    backend = _backend(keks.settings, create=True)
    store = new_store()
    services = build_services(backend, store=store)
    try:
        estate = _populate(services, rotations=0)
        total = len(_all_versions(store, estate))
        report = rotate_master_kek(services, keks.new, create_only=True)
        assert report.created_kek and not report.complete and report.rewrapped == 0
        assert report.total == report.remaining == total and report.by_kek == {keks.old: total}
        assert not backend.ensure_kek(keks.new, create=False)  # it exists now
        assert rotate_master_kek(services, keks.new).complete
    finally:
        store.close()
        backend.close()


def test_the_daemon_keeps_serving_while_the_rotation_runs(keks: Keks) -> None:
    """Unwraps and new wraps on other threads, from a cold HSM cache, while batches commit."""
    backend = _backend(keks.settings, create=True)
    store = new_store()
    services = build_services(backend, store=store)
    try:
        estate = _populate(services, rotations=2)
        done = threading.Event()
        errors: list[BaseException] = []
        rounds = [0]

        def serve() -> None:
            daemon = _fresh_services(backend, store)
            try:
                while not done.is_set() or rounds[0] < 3:
                    _assert_everything_opens(daemon, estate)
                    root = estate.ciphertexts[0][0]
                    sealed = daemon.envelopes.wrap(estate.ctx, root, b"d" * 32)
                    assert (
                        bytes(daemon.envelopes.unwrap(estate.ctx, root, sealed.ciphertext).plaintext)
                        == b"d" * 32
                    )
                    rounds[0] += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=serve) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            report = rotate_master_kek(services, keks.new, batch_size=2, workers=2)
        finally:
            done.set()
            for thread in threads:
                thread.join(60)
        assert not errors, errors
        assert report.complete
    finally:
        store.close()
        backend.close()


def test_a_daemon_in_another_process_sees_the_new_kek_and_the_rewrapped_versions(
    keks: Keks, tmp_path: Path, hsm_settings: Pkcs11Settings
) -> None:
    """The real deployment: `hsmbridge rotate-kek` is its own process with its own PKCS#11
    initialisation; the daemon here must find the KEK that process created on the token."""
    daemon_backend = _backend(keks.settings, create=True)
    db = tmp_path / "store.db"
    store = new_store(str(db))
    services = build_services(daemon_backend, store=store)
    try:
        estate = _populate(services, rotations=1)
        script = textwrap.dedent(
            """
            import json, sys
            from hsmbridge.core.store.sqlite import SqliteStore
            from hsmbridge.hsm.backend import Pkcs11Backend, Pkcs11Settings
            from hsmbridge.kek_rotation import rotate_master_kek

            module, init_args, label, pin, old, new, db = sys.argv[1:]
            backend = Pkcs11Backend(
                Pkcs11Settings(
                    module=module, init_args=init_args or None, pin=pin, token_label=label, kek_label=old
                )
            )
            store = SqliteStore(db)
            try:
                report = rotate_master_kek((store, backend), new)
            finally:
                store.close()
                backend.close()
            print(json.dumps({"complete": report.complete, "rewrapped": report.rewrapped}))
            """
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                hsm_settings.module,
                hsm_settings.init_args or "",
                str(hsm_settings.token_label),
                hsm_settings.pin,
                keks.old,
                keks.new,
                str(db),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        assert outcome == {"complete": True, "rewrapped": len(_all_versions(store, estate))}
        # This process never created the new KEK, yet unwraps under it from a cold cache.
        _assert_everything_opens(_fresh_services(daemon_backend, store), estate)
    finally:
        store.close()
        daemon_backend.close()


def test_a_version_under_a_vanished_kek_is_reported_and_the_rest_rotates(
    keks: Keks, hsm_backend: Pkcs11Backend
) -> None:
    backend = _backend(keks.settings, create=True)
    lost_label = f"{keks.old}-lost"
    lost_backend = _backend(keks.settings, lost_label, create=True)
    store = new_store()
    services = build_services(backend, store=store)
    try:
        estate = _populate(services, rotations=0)
        # One more version, wrapped under a KEK that is then destroyed without a rotation.
        orphan = build_services(lost_backend, store=store)
        key = orphan.keys.create(estate.ctx, KeySpec(name="orphan"))
        _destroy_kek(hsm_backend, lost_label)

        report = rotate_master_kek(services, keks.new)
        assert not report.complete and report.remaining == 1
        assert [(t, v) for t, v, _ in report.failures] == [(estate.ctx.tenant, key.current_version_id)]
        assert "not on the token" in report.failures[0][2]
        assert report.rewrapped == len(_all_versions(store, estate))
        with pytest.raises(InternalError, match="not on the token"):
            backend.rewrap(store.get_version(estate.ctx.tenant, key.current_version_id).wrapped, keks.new)  # type: ignore[union-attr]
    finally:
        store.close()
        lost_backend.close()
        backend.close()
        _destroy_kek(hsm_backend, lost_label)


def test_rewrap_keeps_standard_material_exact_and_refuses_nothing_new(keks: Keks) -> None:
    """A 13-byte secret comes back padded from SoftHSM2's unwrap: the rewrapped blob may carry
    the padding, the recorded length keeps the payload exact."""
    backend = _backend(keks.settings, create=True)
    try:
        backend.ensure_kek(keks.new, create=True)
        secret = os.urandom(13)
        wrapped = backend.wrap_material(MaterialKind.SECRET, secret)
        rewrapped = backend.rewrap(wrapped, keks.new)
        assert rewrapped.kek_label == keks.new and rewrapped.length == 13
        assert bytes(backend.reveal_secret(rewrapped)) == secret
        assert backend.rewrap(rewrapped, keks.new) is rewrapped
    finally:
        backend.close()


def test_rotation_needs_the_pkcs11_backend() -> None:
    from fakes import FakeBackend

    with pytest.raises(Unsupported):
        rotate_master_kek((new_store(), FakeBackend()), "next-kek")
