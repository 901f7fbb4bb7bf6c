"""Failover across the tokens of an HSM group (hsmbridge/hsm/group.py) on real SoftHSM2 tokens.

Two tokens hold one master KEK; one is made unavailable under load and brought back. What must
hold: no wrong answer ever; errors only for requests in flight when the token failed; new
requests served by the other token within 1 s; the token taken back once it returns.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

import pytest

from hsmbridge.core.backend import KeyRef, MaterialKind
from hsmbridge.errors import HsmBridgeError, InvalidInput
from hsmbridge.hsm.backend import Pkcs11Backend, Pkcs11Settings
from hsmbridge.hsm.group import Pkcs11Group, kek_check_value

pytestmark = pytest.mark.softhsm
pytest_plugins = ("failover_fixtures",)


@pytest.fixture
def group(group_members: list[Pkcs11Settings]) -> Iterator[Pkcs11Group]:
    g = Pkcs11Group(group_members, health_interval=0.1, recovery_interval=0.5)
    yield g
    g.close()


def states(group: Pkcs11Group) -> dict[str, tuple[str, bool]]:
    return {t.name: (t.state, t.active) for t in group.status()}


def wait_for(predicate: Callable[[], bool], timeout: float) -> float:
    """Monotonic time at which `predicate` first held; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout} s")
        time.sleep(0.01)
    return time.monotonic()


def test_both_tokens_serve_with_one_kek_and_the_first_is_active(group: Pkcs11Group) -> None:
    tokens = group.status()
    assert [(t.name, t.state, t.active) for t in tokens] == [
        ("failover-a", "up", True),
        ("failover-b", "up", False),
    ]
    assert tokens[0].kek_check == tokens[1].kek_check and len(tokens[0].kek_check) == 16
    info = group.info()
    assert info.token_label == "failover-a" and info.tokens == tokens


def test_material_wrapped_on_one_token_unwraps_on_the_other(group_members: list[Pkcs11Settings]) -> None:
    a, b = (Pkcs11Backend(s) for s in group_members)
    try:
        ref = KeyRef("cross-token", a.generate_key(MaterialKind.AES, 32))
        iv, ct = a.gcm_encrypt(ref, b"payload", b"aad")
        assert bytes(b.gcm_decrypt(ref, iv, ct, b"aad")) == b"payload"
        assert kek_check_value(a) == kek_check_value(b)
    finally:
        a.close()
        b.close()


def test_a_token_with_another_kek_is_refused_at_start(group_members: list[Pkcs11Settings]) -> None:
    stranger = replace(group_members[0], token_label="failover-stranger")
    Pkcs11Backend(stranger, create_kek=True).close()  # a KEK of its own, under the same label
    with pytest.raises(InvalidInput) as refused:
        Pkcs11Group([group_members[0], stranger])
    message = refused.value.message
    assert message.startswith(
        "HSM group token 'failover-stranger' holds a different master KEK 'failover-kek' than token "
        "'failover-a' (key check value "
    )
    assert message.endswith("put the same KEK on every token (docs/operating.md, HSM groups)")


@dataclass
class Outcome:
    started: float
    ended: float
    error: str = ""


@dataclass
class Load:
    """Threads doing envelope work through the group, every answer checked."""

    group: Pkcs11Group
    refs: list[tuple[KeyRef, bytes, bytes, bytes]]
    outcomes: list[Outcome] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def one(self, rng: random.Random) -> None:
        choice = rng.randrange(3)
        if choice == 0:  # a new key: generated, wrapped under the KEK (a token-object operation)
            ref = KeyRef(f"load-{rng.getrandbits(64):x}", self.group.generate_key(MaterialKind.AES, 32))
            data = os.urandom(24)
            iv, ct = self.group.gcm_encrypt(ref, data, b"fresh")
            if bytes(self.group.gcm_decrypt(ref, iv, ct, b"fresh")) != data:
                self.wrong.append("fresh round trip")
        elif choice == 1:  # an old ciphertext opens to its plaintext
            ref, iv, ct, data = self.refs[rng.randrange(len(self.refs))]
            if bytes(self.group.gcm_decrypt(ref, iv, ct, b"old")) != data:
                self.wrong.append("old ciphertext")
        else:  # the serving token's cache, or an unwrap on the other one
            ref = self.refs[rng.randrange(len(self.refs))][0]
            data = os.urandom(16)
            iv, ct = self.group.gcm_encrypt(ref, data, b"rt")
            if bytes(self.group.gcm_decrypt(ref, iv, ct, b"rt")) != data:
                self.wrong.append("round trip")

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.one(rng)
            except HsmBridgeError as exc:
                error = f"{type(exc).__name__}: {exc.message}"
                self.outcomes.append(Outcome(started, time.monotonic(), error))
            else:
                self.outcomes.append(Outcome(started, time.monotonic()))


@dataclass
class Failover:
    """What `fail_over_under_load` saw: when the first token failed, when new requests had moved,
    when it was back and taken back; the load's outcomes."""

    load: Load
    refs: list[tuple[KeyRef, bytes, bytes, bytes]]
    failed_at: float
    moved_at: float
    back_at: float
    taken_back_at: float

    def check(self, threads: int) -> None:
        """No wrong answers; moved within a second; errors only for calls in flight then."""
        assert self.load.wrong == []
        moved = self.moved_at - self.failed_at
        assert moved < 1.0, f"new requests moved after {moved:.2f} s"
        errors = [o for o in self.load.outcomes if o.error]
        # Only requests in flight at the moment of failure may fail: started before the group moved.
        assert all(o.started <= self.moved_at and o.ended >= self.failed_at for o in errors), errors
        assert len(errors) <= threads
        assert self.taken_back_at >= self.back_at


def fail_over_under_load(
    group: Pkcs11Group,
    token_outage: Callable[[str], AbstractContextManager[None]],
    *,
    threads: int = 4,
    keys: int = 8,
    calls: int = 200,
) -> Failover:
    """Envelope work from `threads` threads while the first token is taken away and returned."""
    first, second = (t.name for t in group.status()[:2])
    refs = []
    for i in range(keys):
        ref = KeyRef(f"failover-{first}-{i}", group.generate_key(MaterialKind.AES, 32))
        data = os.urandom(32)
        iv, ct = group.gcm_encrypt(ref, data, b"old")
        refs.append((ref, iv, ct, data))
    load = Load(group, refs)
    workers = [threading.Thread(target=load.run, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    try:
        wait_for(lambda: len(load.outcomes) >= calls, 30)
        assert states(group)[first] == ("up", True)
        with token_outage(first):
            failed_at = time.monotonic()
            moved_at = wait_for(lambda: states(group)[second] == ("up", True), 10)
            served = len(load.outcomes)
            wait_for(lambda: len(load.outcomes) >= served + calls, 30)  # served by the second meanwhile
            assert states(group)[first][0] == "down"
        back_at = time.monotonic()
        taken_back_at = wait_for(lambda: states(group)[first] == ("up", True), 15)
        served = len(load.outcomes)
        wait_for(lambda: len(load.outcomes) >= served + calls, 30)
    finally:
        load.stop.set()
        for t in workers:
            t.join()
    return Failover(load, refs, failed_at, moved_at, back_at, taken_back_at)


def test_a_failed_token_is_replaced_within_a_second_and_taken_back_when_it_returns(
    group: Pkcs11Group, token_outage: Callable[[str], AbstractContextManager[None]]
) -> None:
    seen = fail_over_under_load(group, token_outage)
    seen.check(threads=4)
    a = group.status()[0]
    assert a.failures == 1 and a.kek_check == group.status()[1].kek_check
    # After the return the first token serves again: its own cache, its own sessions.
    ref, iv, ct, data = seen.refs[0]
    assert bytes(group.gcm_decrypt(ref, iv, ct, b"old")) == data


def encrypted_import(der: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(material, encrypted key, iv, encrypted nonce) as a Key Protect client builds them."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    public = serialization.load_der_public_key(der)
    material, iv, nonce = os.urandom(32), os.urandom(12), os.urandom(12)
    sha1 = hashes.SHA1()
    oaep = padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)
    encrypted = public.encrypt(material, oaep)  # type: ignore[union-attr]
    return material, encrypted, iv, AESGCM(material).encrypt(iv, nonce, None) + nonce


def test_an_import_key_lives_on_its_token_and_is_not_made_twice(
    group_members: list[Pkcs11Settings], token_outage: Callable[[str], AbstractContextManager[None]]
) -> None:
    """Import keypairs are token objects on one member. Creating one is never repeated on another
    token; importing with it finds it wherever it is, and says "unavailable" (not "not found")
    while the token that holds it is down."""
    from hsmbridge.core.backend import OaepHash
    from hsmbridge.errors import HsmUnavailable

    # Health checks far apart: here only requests find the failure, so the keygen meets it.
    group = Pkcs11Group(group_members, health_interval=60, recovery_interval=0.2)
    try:
        on_a = group.create_import_keypair("failover-import-a", 2048)
        _, encrypted, iv, sealed = encrypted_import(on_a)
        with token_outage("failover-a"):
            with pytest.raises(HsmBridgeError):  # SoftHSM2 answers CKR_GENERAL_ERROR here
                group.create_import_keypair("failover-import-lost", 2048)
            assert states(group)["failover-a"] == ("down", False)
            assert "failover-import-lost" not in group.find_import_keypairs("failover-import-")  # not on b
            with pytest.raises(HsmUnavailable, match="a token that may hold it is down"):
                group.import_key("failover-import-a", encrypted, OaepHash.SHA1, iv, sealed[:-12])
            on_b = group.create_import_keypair("failover-import-b", 2048)  # b serves
            _, e2, iv2, s2 = encrypted_import(on_b)
            assert group.import_key("failover-import-b", e2, OaepHash.SHA1, iv2, s2[:-12]).nonce == s2[-12:]
        group._wake.set()
        wait_for(lambda: states(group)["failover-a"] == ("up", True), 15)
        imported = group.import_key("failover-import-a", encrypted, OaepHash.SHA1, iv, sealed[:-12])
        assert imported.nonce == sealed[-12:] and imported.wrapped.length == 32
        # a serves again, and still finds the keypair made on b
        assert group.import_key("failover-import-b", e2, OaepHash.SHA1, iv2, s2[:-12]).nonce == s2[-12:]
        for object_id in ("failover-import-a", "failover-import-b", "failover-import-lost"):
            group.destroy_import_keypair(object_id)
        assert group.find_import_keypairs("failover-import-") == []
    finally:
        group.close()


def test_re_initialising_the_module_while_another_token_serves_costs_that_token_nothing(
    group_members: list[Pkcs11Settings],
) -> None:
    """The two tokens are slots of one module: one's recovery re-initialises what the other
    serves from. Unguarded, SoftHSM2 crashed the process (3 runs of 4); fenced and drained, every
    call of the serving token still succeeds, and gives the right answer."""
    a, b = (Pkcs11Backend(s) for s in group_members)
    try:
        refs = [KeyRef(f"reinit-{i}", b.generate_key(MaterialKind.AES, 32)) for i in range(4)]
        stop = threading.Event()
        failures: list[str] = []
        done = [0] * 4

        def serve(n: int) -> None:
            while not stop.is_set():
                try:
                    data = os.urandom(16)
                    iv, ct = b.gcm_encrypt(refs[n], data, b"")
                    if bytes(b.gcm_decrypt(refs[n], iv, ct, b"")) != data:
                        failures.append("wrong answer")
                    done[n] += 1
                except HsmBridgeError as exc:
                    failures.append(f"{type(exc).__name__}: {exc.message}")

        threads = [threading.Thread(target=serve, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            for _ in range(20):
                a.library.reinitialize(a.library.generation, drain_timeout=10)
                a.random(1)  # the re-initialising side logs in again too
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert failures == []
        assert all(done)
    finally:
        a.close()
        b.close()


def test_with_every_token_down_requests_fail_fast_and_the_first_to_return_serves(
    group: Pkcs11Group, token_outage: Callable[[str], AbstractContextManager[None]]
) -> None:
    """Both members out at once: no wrong answer and no hang, every request refused at once as
    retryable (HsmUnavailable, with its Retry-After), and the member that returns first serves
    within a second of being back, before the other one does."""
    from hsmbridge.errors import HsmUnavailable
    from hsmbridge.hsm.library import RETRY_AFTER

    ref = KeyRef("all-down", group.generate_key(MaterialKind.AES, 32))
    iv, ct = group.gcm_encrypt(ref, b"kept", b"aad")
    with token_outage("failover-b"):
        with token_outage("failover-a"):
            wait_for(lambda: all(state == "down" for state, _ in states(group).values()), 10)
            for _ in range(20):
                started = time.monotonic()
                with pytest.raises(HsmUnavailable) as refused:
                    group.gcm_decrypt(ref, iv, ct, b"aad")
                assert time.monotonic() - started < 1.0  # refused, not queued
                assert refused.value.metadata.get(RETRY_AFTER)
        back_at = time.monotonic()
        served_at = wait_for(lambda: _serves(group, ref, iv, ct), 10)
        assert served_at - back_at < 1.5, f"served {served_at - back_at:.2f} s after a returned"
        assert states(group) == {"failover-a": ("up", True), "failover-b": ("down", False)}
    wait_for(lambda: states(group)["failover-b"] == ("up", False), 15)


def _serves(group: Pkcs11Group, ref: KeyRef, iv: bytes, ct: bytes) -> bool:
    from hsmbridge.errors import HsmUnavailable

    try:
        return bytes(group.gcm_decrypt(ref, iv, ct, b"aad")) == b"kept"
    except HsmUnavailable:
        return False
