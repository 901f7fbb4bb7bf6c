"""openCryptoki's software token under test: `pkcsslotd` started (and stopped) here, the token
initialised here. A test module loads these with `pytest_plugins = ("opencryptoki_fixtures",)`.

openCryptoki 3.8.1 cannot keep its token in a temp dir: the software token's data store is
compiled in (`/var/lib/opencryptoki/swtok`); `PKCS_APP_STORE` sets only a path the file I/O does
not use (loadsave.c `init_data_store` leaves `data_store` empty on that branch), and a slot's
`tokname` lives in the system-wide /etc/opencryptoki/opencryptoki.conf, which `pkcsslotd` reads
at start-up and which a test has no business editing. So the fixture works on the system token,
and does so safely:

- an exclusive lock (`/var/lock/opencryptoki/hsmbridge-tests.lock`) serialises test runs, since
  there is one `pkcsslotd` and one software token per machine;
- it re-initialises the token only when it is fresh (never initialised) or labelled as ours
  (`hsmbridge-test`); a token with any other label is someone's and the fixture fails instead;
- `pkcsslotd` is started only when it is not running, and then stopped by its pid at the end.

The SO PIN stays openCryptoki's documented factory default (it is a throw-away test token);
the user PIN is new every run (openCryptoki wants 4-8 characters).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

OCK_MODULE = "/usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so.0"
OCK_SLOT = 3  # libpkcs11_sw.so in Debian's opencryptoki.conf
OCK_LABEL = "hsmbridge-test"
OCK_SO_PIN = "87654321"  # openCryptoki's factory default SO PIN
PKCSSLOTD = "/usr/sbin/pkcsslotd"
PKCSCONF = "/usr/sbin/pkcsconf"
PID_FILE = Path("/var/run/pkcsslotd.pid")
LOCK_FILE = Path("/var/lock/opencryptoki/hsmbridge-tests.lock")
LOCK_WAIT = 600.0
CKF_TOKEN_INITIALIZED = 0x400


def _pkcsconf(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [PKCSCONF, "-c", str(OCK_SLOT), *args], input=stdin, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"pkcsconf {args[0]} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _token_state() -> tuple[str, int]:
    """(label, flags) of the software token, as pkcsconf -t prints them."""
    label, flags = "", 0
    for line in _pkcsconf("-t").splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Label":
            label = value.strip()
        elif key == "Flags":
            flags = int(value.split()[0], 16)
    return label, flags


def _alive(pid: int) -> bool:
    """Running, and not a zombie (a stale pid file can name one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _running_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _start_slot_daemon() -> int:
    PID_FILE.unlink(missing_ok=True)  # stale: nobody alive has it
    subprocess.run([PKCSSLOTD], check=True, capture_output=True)  # it daemonises
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = _running_pid()
        if pid is not None and Path("/var/run/pkcsslotd.socket").exists():
            return pid
        time.sleep(0.05)
    raise RuntimeError("pkcsslotd did not come up within 10 s")


def _stop_slot_daemon(pid: int) -> None:
    os.kill(pid, 15)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="session")
def opencryptoki_token() -> Iterator[dict[str, str | int]]:
    """openCryptoki's software token, initialised for this run with a fresh user PIN."""
    if not (shutil.which(PKCSSLOTD) and Path(OCK_MODULE).exists()):
        pytest.fail("openCryptoki is not installed (apt-get install opencryptoki); `make test` installs it")
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as lock:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test run held {LOCK_FILE} for {LOCK_WAIT:.0f} s")
                time.sleep(0.5)
        started = None if _running_pid() is not None else _start_slot_daemon()
        try:
            label, flags = _token_state()
            if flags & CKF_TOKEN_INITIALIZED and label != OCK_LABEL:
                pytest.fail(
                    f"openCryptoki's software token (slot {OCK_SLOT}) is initialised as {label!r}, not as "
                    f"the test token {OCK_LABEL!r}: refusing to re-initialise someone else's token"
                )
            pin = "".join(secrets.choice("0123456789") for _ in range(8))
            _pkcsconf("-I", "-S", OCK_SO_PIN, stdin=OCK_LABEL + "\n")  # wipes the token's objects
            _pkcsconf("-u", "-S", OCK_SO_PIN, "-n", pin)
            yield {"module": OCK_MODULE, "label": OCK_LABEL, "pin": pin, "slot": OCK_SLOT}
        finally:
            if started is not None:
                _finalize_in_this_process()
                _stop_slot_daemon(started)


def _finalize_in_this_process() -> None:
    """pkcsslotd ignores SIGTERM while a process is registered with it (signal.c), and this
    process is, for as long as the module is initialised here."""
    from hsmbridge.hsm.library import Pkcs11Library

    library = Pkcs11Library._instances.get(OCK_MODULE)
    if library is not None:
        library.finalize_behind_our_back()
