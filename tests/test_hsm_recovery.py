"""The session pool recovers from what real HSMs do to long-running clients: sessions closed
behind its back and the library finalised (the next operation succeeds after one internal
retry), object handles gone stale because the token went away (the backend answers "unavailable"
at once while it is gone and recovers in the background once it is back), and the concurrent
token-open race at start-up (retried with a bounded backoff)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pkcs11 import exceptions as p11

from hsmbridge import softhsm
from hsmbridge.core.backend import KeyRef, MaterialKind
from hsmbridge.errors import HsmUnavailable
from hsmbridge.hsm.backend import Pkcs11Backend
from hsmbridge.hsm.library import Pkcs11Library
from hsmbridge.hsm.pool import OPEN_ATTEMPTS, SessionPool
from hsmbridge.hsm.recovery import RecoveryPolicy

pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]


@pytest.fixture
def backend(hsm_settings, hsm_backend):  # type: ignore[no-untyped-def]
    """A private backend (pool of 2) on the session token; `hsm_backend` created the master KEK."""
    b = Pkcs11Backend(replace(hsm_settings, pool_size=2))
    yield b
    b.close()


@contextmanager
def token_moved_away(softhsm_token: dict[str, str]) -> Iterator[None]:
    """The token is gone while inside: its directory is moved out of SoftHSM2's token dir (not
    renamed inside it, where a re-initialised SoftHSM2 would find it under the new name)."""
    tokens = Path(softhsm_token["dir"]) / "tokens"
    (token_dir,) = [p for p in tokens.iterdir() if p.is_dir() and any(p.iterdir())][:1]
    aside = Path(softhsm_token["dir"]) / (token_dir.name + ".aside")
    shutil.move(token_dir, aside)
    try:
        yield
    finally:
        shutil.move(aside, token_dir)


def roundtrip(backend: Pkcs11Backend, ref: KeyRef) -> None:
    iv, ct = backend.gcm_encrypt(ref, b"payload", b"aad")
    assert bytes(backend.gcm_decrypt(ref, iv, ct, b"aad")) == b"payload"


def test_a_worker_session_closed_behind_the_pools_back_is_replaced(backend: Pkcs11Backend) -> None:
    ref = KeyRef("recovery-session", backend.generate_key(MaterialKind.AES, 32))
    roundtrip(backend, ref)
    with backend.pool.checkout() as pooled:
        pooled.session.close()  # a worker session: C_CloseSession only, the login stays
    replaced = backend.pool.stats().replaced
    roundtrip(backend, ref)
    assert backend.pool.stats().replaced == replaced + 1


@pytest.mark.only_on("softhsm2")  # takes the token away by moving SoftHSM2's token directory
def test_stale_token_object_handles_are_looked_up_again(
    backend: Pkcs11Backend, softhsm_token: dict[str, str]
) -> None:
    """Moving SoftHSM2's token directory away and back invalidates token-object handles (the
    master KEK's), as a network HSM restart does: the backend reports the HSM unavailable
    (503-class, retryable), recovers in the background once the token is back, and the handles
    are found again by label."""
    ref = KeyRef("recovery-stale", backend.generate_key(MaterialKind.AES, 32))
    roundtrip(backend, ref)
    with token_moved_away(softhsm_token):
        with pytest.raises(HsmUnavailable) as raised:
            backend.generate_key(MaterialKind.AES, 32)
        assert raised.value.metadata["retry_after"] == "1"
        assert not backend.healthy
        with pytest.raises(HsmUnavailable):  # fails fast while down
            roundtrip(backend, ref)
    assert backend.health.wait_up(5.0)
    wrapped = backend.generate_key(MaterialKind.AES, 32)  # KEK handle re-found
    roundtrip(backend, KeyRef("recovery-stale-2", wrapped))
    roundtrip(backend, ref)


def test_a_finalised_library_is_reinitialised_and_the_operation_retried(backend: Pkcs11Backend) -> None:
    ref = KeyRef("recovery-reinit", backend.generate_key(MaterialKind.AES, 32))
    roundtrip(backend, ref)
    generation = backend.library.generation
    backend.library.finalize_behind_our_back()
    roundtrip(backend, ref)  # CKR_CRYPTOKI_NOT_INITIALIZED → re-initialise → log in → reload → retry
    assert backend.library.generation == generation + 1
    assert backend.pool.stats().rebuilds >= 1
    assert backend.library.is_initialized_by_us()


def test_checkout_times_out_with_a_clear_error_when_every_session_is_busy(backend: Pkcs11Backend) -> None:
    with (
        backend.pool.checkout(),
        backend.pool.checkout(),
        pytest.raises(HsmUnavailable, match="no HSM session"),
        backend.pool.checkout(timeout=0.05),
    ):
        pass


def test_iv_are_never_repeated(backend: Pkcs11Backend) -> None:
    ref = KeyRef("iv-uniqueness", backend.generate_key(MaterialKind.AES, 32))
    ivs = {backend.gcm_encrypt(ref, os.urandom(8), b"")[0] for _ in range(3000)}
    assert len(ivs) == 3000


class RacingToken:
    """A real token whose first `failures` C_OpenSession calls fail as SoftHSM2 does when another
    process opens the token at the same moment (CKR_GENERAL_ERROR)."""

    def __init__(self, token: object, failures: int) -> None:
        self._token, self.failures = token, failures

    def open(self, **kwargs: object) -> object:
        if self.failures > 0:
            self.failures -= 1
            raise p11.GeneralError()
        return self._token.open(**kwargs)  # type: ignore[attr-defined]


class RacingLibrary:
    """The real loaded module, whose C_GetTokenInfo (get_token) races `failures` times first."""

    def __init__(self, library: Pkcs11Library, *, token_failures: int, open_failures: int) -> None:
        self._library, self.token_failures, self.open_failures = library, token_failures, open_failures
        self.generation = library.generation
        self.lib = self

    def __getattr__(self, name: str) -> Any:  # permits, token bookkeeping: the real module's
        return getattr(self._library, name)

    def get_token(self, **kwargs: object) -> RacingToken:
        self.racing = self.token_failures > 0
        if self.racing:
            self.token_failures -= 1
            raise p11.GeneralError()
        token = self._library.lib.get_token(**kwargs)
        return RacingToken(token, self.open_failures)

    def get_slots(self, **kwargs: object) -> Any:
        """The pool's slot-by-slot fallback after a failed get_token: the race fails it too."""
        if self.racing:
            raise p11.GeneralError()
        return self._library.lib.get_slots(**kwargs)


def racing_pool(hsm_settings: Any, hsm_backend: Pkcs11Backend, **failures: int) -> SessionPool:
    racing = RacingLibrary(hsm_backend.library, **failures)
    return SessionPool(
        racing,  # type: ignore[arg-type]
        token_label=hsm_settings.token_label,
        slot_id=None,
        pin=hsm_settings.pin,
        size=1,
        checkout_timeout=1.0,
    )


def test_worker_start_retries_the_concurrent_token_open_race(
    hsm_settings: Any, hsm_backend: Pkcs11Backend
) -> None:
    """`serve --workers 2` failed to start when one worker's C_GetTokenInfo / C_OpenSession got
    CKR_GENERAL_ERROR while the other opened the token: start-up now retries with a bounded
    backoff, and fails only when the error persists."""
    pool = racing_pool(hsm_settings, hsm_backend, token_failures=3, open_failures=2)
    with pool.checkout() as pooled:
        assert pooled.session.generate_random(64)
    pool.close()
    with pytest.raises(p11.GeneralError):  # bounded: a persistent error still fails the start
        racing_pool(hsm_settings, hsm_backend, token_failures=OPEN_ATTEMPTS, open_failures=0)


@pytest.mark.only_on("softhsm2")  # takes the token away by moving SoftHSM2's token directory
def test_a_token_outage_on_a_shared_module_leaves_the_other_tokens_backend_serving(
    hsm_settings: Any, hsm_backend: Pkcs11Backend, softhsm_token: dict[str, str]
) -> None:
    """Two backends on one module path (two tokens, as hsm/group.py composes them) share one
    C_Initialize. While one token is gone, the other backend keeps serving: the failed backend
    does not re-initialise the module under it every backoff interval (only every
    `shared_reinit_interval`), and recovers once its token is back."""
    tokens = Path(softhsm_token["dir"]) / "tokens"
    before = {p for p in tokens.iterdir() if p.is_dir()}
    label = f"shared-{uuid.uuid4().hex[:8]}"
    softhsm.init_token(Path(softhsm_token["conf"]), label, softhsm_token["pin"])
    (second_dir,) = {p for p in tokens.iterdir() if p.is_dir()} - before
    library = hsm_backend.library
    library.reinitialize(library.generation, drain_timeout=5)  # SoftHSM2 scans tokens at C_Initialize
    policy = RecoveryPolicy(shared_reinit_interval=2.0)
    first = Pkcs11Backend(replace(hsm_settings, pool_size=2))
    second = Pkcs11Backend(
        replace(hsm_settings, token_label=label, pool_size=2, recovery=policy), create_kek=True
    )
    try:
        ref = KeyRef("shared-module", first.generate_key(MaterialKind.AES, 32))
        other = KeyRef("shared-module-2", second.generate_key(MaterialKind.AES, 32))
        aside = Path(softhsm_token["dir"]) / "second-token-aside"
        shutil.move(second_dir, aside)
        try:
            with pytest.raises(HsmUnavailable):
                second.generate_key(MaterialKind.AES, 32)
            assert not second.healthy
            generation, until = library.generation, time.monotonic() + 3.0
            while time.monotonic() < until:  # the first token's backend serves on
                roundtrip(first, ref)
            # re-initialised at most every shared_reinit_interval (2 s), not every backoff (≤1 s)
            assert first.healthy and library.generation - generation <= 2
        finally:
            shutil.move(aside, second_dir)
        assert second.health.wait_up(2 * policy.shared_reinit_interval + 5)
        roundtrip(second, other)
        roundtrip(first, ref)
    finally:
        second.close()
        first.close()
