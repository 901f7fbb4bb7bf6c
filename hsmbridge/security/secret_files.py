"""Secrets at rest on the host: the HSM PIN (and any other secret file) read safely.

Rules, and why:
- A PIN comes from a file or the environment, never the command line (``ps`` shows argv to every
  user) and preferably never the main configuration file (which gets copied around).
- A secret file must be a regular file that other users cannot access (no ``o`` bits): a
  world-readable PIN is treated as leaked, and starting anyway would hide that.
- The value is returned as a `bytearray` so the caller can `wipe` it after use; the environment
  variable is removed once read so child processes do not inherit it.
- Errors name the file or variable, never the value.
"""

from __future__ import annotations

import os
import stat
from collections.abc import MutableMapping
from pathlib import Path

from hsmbridge.core.backend import wipe
from hsmbridge.errors import InvalidInput

PIN_ENV = "HSMBRIDGE_HSM_PIN"
MAX_SECRET_BYTES = 4096

__all__ = ["MAX_SECRET_BYTES", "PIN_ENV", "read_pin", "read_secret_file", "wipe"]


def read_secret_file(path: str | Path) -> bytearray:
    """The file's content without a trailing newline, as a wipeable buffer."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait forever for a writer (regular files
        # ignore the flag); O_NOFOLLOW: a symlink could point anywhere.
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InvalidInput(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open secret file {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"secret file {path} is not a regular file")
        if info.st_mode & 0o007:
            raise InvalidInput(
                f"secret file {path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                "chmod o-rwx it and treat the secret as exposed"
            )
        if info.st_size > MAX_SECRET_BYTES:
            raise InvalidInput(f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes")
        buf = bytearray(info.st_size + 1)
        view = memoryview(buf)
        n = 0
        while n < len(buf):
            got = os.readv(fd, [view[n:]])
            if got == 0:
                break
            n += got
    finally:
        os.close(fd)
    end = n
    while end and buf[end - 1] in b"\r\n":
        end -= 1
    secret = bytearray(buf[:end])
    wipe(buf)
    return secret


def read_pin(
    pin_file: str | Path | None,
    environ: MutableMapping[str, str] | None = None,
    *,
    env_var: str = PIN_ENV,
    consume_env: bool = True,
) -> bytearray:
    """The PIN from `env_var` (removed from the environment once read, unless `consume_env` is
    off) or else from `pin_file`."""
    env = os.environ if environ is None else environ
    value = env.get(env_var)
    if value:
        if consume_env:
            env.pop(env_var, None)
        return bytearray(value.encode())
    if pin_file:
        pin = read_secret_file(pin_file)
        if not pin:
            raise InvalidInput(f"secret file {pin_file} is empty")
        return pin
    raise InvalidInput(f"no HSM PIN: set hsm.pin_file or {env_var}")
