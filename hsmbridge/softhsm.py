"""Development and test tokens on SoftHSM2: a config file and a token in a directory of ours.

SoftHSM2 reads `SOFTHSM2_CONF` when the module is initialised, so the variable must be set before
anything loads the module in this process (the CLI and the test fixtures do that first).
This module never imports pkcs11: it drives `softhsm2-util`, which any Debian box gets from the
`softhsm2` package.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)

TEMPLATE = Path(__file__).resolve().parent.parent / "softhsm" / "softhsm2.conf.template"
_DEFAULT_TEMPLATE = """\
# SoftHSM2 configuration written by hsmbridge; tokens live next to this file.
directories.tokendir = {tokendir}
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = ALL
library.reset_on_fork = false
"""


def find_module() -> str | None:
    for candidate in MODULE_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


def write_config(directory: Path) -> Path:
    """Create `directory/tokens/` and `directory/softhsm2.conf`; return the config path."""
    directory.mkdir(parents=True, exist_ok=True)
    tokendir = directory / "tokens"
    tokendir.mkdir(mode=0o700, exist_ok=True)
    conf = directory / "softhsm2.conf"
    template = TEMPLATE.read_text() if TEMPLATE.exists() else _DEFAULT_TEMPLATE
    conf.write_text(template.format(tokendir=tokendir))
    return conf


def _util(conf: Path, *args: str) -> str:
    exe = shutil.which("softhsm2-util")
    if exe is None:
        raise RuntimeError(
            "softhsm2-util not found: install the `softhsm2` package (apt-get install softhsm2)"
        )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    result = subprocess.run([exe, *args], env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(
            f"softhsm2-util {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def token_exists(conf: Path, label: str) -> bool:
    out = _util(conf, "--show-slots")
    return any(
        line.strip().startswith("Label:") and line.split(":", 1)[1].strip() == label
        for line in out.splitlines()
    )


def init_token(conf: Path, label: str, pin: str, so_pin: str | None = None) -> None:
    _util(
        conf,
        "--init-token",
        "--free",
        "--label",
        label,
        "--pin",
        pin,
        "--so-pin",
        so_pin or secrets.token_hex(8),
    )


def new_pin() -> str:
    return secrets.token_urlsafe(18)
