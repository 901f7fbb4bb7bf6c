"""Master KEK rotation without downtime: rewrap every stored key version under a new KEK.

Why it can run while daemons serve:

- Every stored version names the KEK that wraps it (`WrappedKey.kek_label`), and the backend
  unwraps each version under *its own* KEK, finding any label on the token (hsm/backend.py). A
  version read before its rewrap and one read after both work, in this process and in every
  daemon, whatever `hsm.kek_label` those daemons run with.
- A rewrap changes only the wrapping, never the material, so the daemons' cached use keys (keyed
  by version id) stay valid and every ciphertext made before, during and after still opens.
- Each version is replaced by compare-and-swap (`StoreTransaction.replace_wrapped`): a daemon never
  changes a stored version, so the only race is with another rotation run, which loses quietly.

Why it is resumable: the work list is "every version not under the new KEK"
(`Store.list_versions_not_under_kek`), recomputed on every run. A rewrapped version drops out of
it; an interrupted run (Ctrl-C, lost HSM, killed pod) is re-run with the same label and carries
on with what is left, including versions daemons created meanwhile under the old KEK.

The procedure (docs/operating.md, "Rotating the master KEK"): create the new KEK
(`create_only`) and back it up; switch `hsm.kek_label` to it and roll the daemons (every daemon
then sees the new KEK, and wraps new material under it); rewrap until the report is `complete`;
roll the daemons once more (they cache key versions, wrapping included); only then destroy the
old KEK with the HSM's tools.

The HSM work is `Pkcs11Backend.rewrap` (unwrap into a transient session object that is
extractable only to be wrapped, wrap under the new KEK, destroy): the material never leaves the
HSM in the clear. This module holds only the bookkeeping and imports no pkcs11.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from hsmbridge.core.model import KeyVersion, WrappedKey
from hsmbridge.core.store.base import Store
from hsmbridge.errors import HsmBridgeError, HsmUnavailable, InvalidInput, Unsupported

log = logging.getLogger(__name__)

__all__ = [
    "RotationProgress",
    "RotationReport",
    "format_progress",
    "rotate_master_kek",
]


class KekRotatingBackend(Protocol):
    """What rotation needs from the HSM side (`Pkcs11Backend` has it; the test fake does not)."""

    def ensure_kek(self, label: str, *, create: bool) -> bool: ...
    def kek_trusted(self, label: str) -> bool: ...
    def rewrap(self, wrapped: WrappedKey, kek_label: str) -> WrappedKey: ...
    def capabilities(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class RotationProgress:
    """A snapshot for the progress callback: `done` of `total` versions, at `rate` per second."""

    done: int
    total: int
    rewrapped: int
    skipped: int
    failed: int
    elapsed: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(slots=True)
class RotationReport:
    """What one run did. `complete` means nothing is left under any other KEK: only then may the
    old KEK be destroyed (and only once every daemon runs with the new `hsm.kek_label`)."""

    new_label: str
    created_kek: bool
    total: int = 0
    rewrapped: int = 0
    #: lost a race (another run rewrapped it first) or purged meanwhile: nothing to do
    skipped: int = 0
    #: (tenant, version id, error message) of versions that could not be rewrapped
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    #: versions per KEK label after the run, the new one included
    by_kek: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    elapsed: float = 0.0

    @property
    def remaining(self) -> int:
        """Versions still under another KEK than the new one."""
        return sum(n for label, n in self.by_kek.items() if label != self.new_label)

    @property
    def complete(self) -> bool:
        return not self.interrupted and not self.failures and self.remaining == 0


def format_progress(p: RotationProgress) -> str:
    """One line for a terminal or a log: ``1200/5000 versions (24%), 850/s, 0 skipped, 0 failed``."""
    percent = 100 * p.done // p.total if p.total else 100
    return (
        f"{p.done}/{p.total} versions ({percent}%), {p.rate:.0f}/s, "
        f"{p.rewrapped} rewrapped, {p.skipped} skipped, {p.failed} failed"
    )


def _parts(services_or_parts: Any) -> tuple[Store, KekRotatingBackend]:
    """Accept a `Services` (anything with `.store` and `.backend`) or a ``(store, backend)`` pair,
    so the CLI can rotate without building the whole service layer."""
    if isinstance(services_or_parts, tuple):
        store, backend = services_or_parts
    else:
        store, backend = services_or_parts.store, services_or_parts.backend
    for name in ("ensure_kek", "kek_trusted", "rewrap"):
        if not callable(getattr(backend, name, None)):
            raise Unsupported("master KEK rotation needs the PKCS#11 backend")
    return store, backend


def rotate_master_kek(
    services_or_parts: Any,
    new_label: str,
    *,
    progress: Callable[[RotationProgress], None] | None = None,
    progress_every: float = 2.0,
    batch_size: int = 256,
    workers: int = 4,
    stop: threading.Event | None = None,
    create_only: bool = False,
) -> RotationReport:
    """Create the KEK `new_label` if it is missing, then rewrap every version under another KEK.

    `create_only` stops after creating (and checking) the KEK: some modules show a process only
    the token objects that existed when it initialised the library (nShield's default), so the
    daemons must be restarted after the KEK exists and before any version is rewrapped under it.

    `progress` is called at most every `progress_every` seconds and once at the end. `stop`, when
    set, ends the run after the current batch (the report says `interrupted`); re-running
    continues. HSM rewraps of a batch run on `workers` threads (sessions of the backend's pool);
    the store writes of a batch are one short transaction, never held across an HSM call.

    Errors that concern one version (its KEK destroyed, its blob corrupt) are recorded in
    `failures` and the run goes on; an unavailable HSM or store ends the run with the error.
    """
    if not new_label or new_label.strip() != new_label:
        raise InvalidInput("the new KEK label must be a non-empty string without surrounding spaces")
    if batch_size < 1 or workers < 1:
        raise InvalidInput("batch_size and workers must be at least 1")
    store, backend = _parts(services_or_parts)
    started = time.monotonic()
    created = backend.ensure_kek(new_label, create=True)
    if created:
        log.info("created master KEK %r", new_label)
    if backend.capabilities().trusted_kek and not backend.kek_trusted(new_label):
        # Our transient keys carry CKA_WRAP_WITH_TRUSTED: an untrusted KEK could wrap none of them.
        raise InvalidInput(
            f"the master KEK is CKA_TRUSTED but {new_label!r} is not: have the security officer "
            "mark it trusted with the HSM's tools, then run the rotation again"
        )

    report = RotationReport(new_label=new_label, created_kek=created)
    report.total = sum(n for label, n in store.count_versions_by_kek().items() if label != new_label)
    if create_only:
        report.by_kek = store.count_versions_by_kek()
        report.interrupted = True  # nothing rewrapped yet: not complete
        report.elapsed = time.monotonic() - started
        return report
    last_report = 0.0

    def snapshot() -> RotationProgress:
        done = report.rewrapped + report.skipped + len(report.failures)
        return RotationProgress(
            done=done,
            total=max(report.total, done),
            rewrapped=report.rewrapped,
            skipped=report.skipped,
            failed=len(report.failures),
            elapsed=time.monotonic() - started,
        )

    def rewrap_one(version: KeyVersion) -> WrappedKey | HsmBridgeError:
        try:
            return backend.rewrap(version.wrapped, new_label)
        except HsmUnavailable:
            raise
        except HsmBridgeError as exc:
            return exc

    cursor: tuple[str, str] | None = None
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kek-rotation") as pool:
        while True:
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
            batch = store.list_versions_not_under_kek(new_label, after=cursor, limit=batch_size)
            if not batch:
                break
            cursor = (batch[-1].tenant, batch[-1].id)
            results = list(pool.map(rewrap_one, batch))
            _store_batch(store, batch, results, report)
            now = time.monotonic()
            if progress is not None and now - last_report >= progress_every:
                last_report = now
                progress(snapshot())

    report.by_kek = store.count_versions_by_kek()
    report.elapsed = time.monotonic() - started
    if progress is not None:
        progress(snapshot())
    log.info(
        "master KEK rotation to %r: %d rewrapped, %d skipped, %d failed, %d left under other KEKs",
        new_label,
        report.rewrapped,
        report.skipped,
        len(report.failures),
        report.remaining,
    )
    return report


def _store_batch(
    store: Store,
    batch: Sequence[KeyVersion],
    results: Sequence[WrappedKey | HsmBridgeError],
    report: RotationReport,
) -> None:
    """One transaction of compare-and-swaps for a batch whose HSM work is already done."""
    swapped = 0
    lost = 0
    with store.transaction() as tx:
        for version, result in zip(batch, results, strict=True):
            if isinstance(result, HsmBridgeError):
                continue
            if tx.replace_wrapped(version.tenant, version.id, version.wrapped, result):
                swapped += 1
            else:
                lost += 1
    # Counted only once committed: a failed commit raises and counts nothing.
    report.rewrapped += swapped
    report.skipped += lost
    for version, result in zip(batch, results, strict=True):
        if isinstance(result, HsmBridgeError):
            report.failures.append((version.tenant, version.id, result.message))
            log.warning(
                "could not rewrap key version %s of tenant %s: %s", version.id, version.tenant, result.message
            )
