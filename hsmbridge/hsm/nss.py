"""NSS's softoken as a PKCS#11 token: where the module is, how it is initialised, a new token.

The softoken (`libsoftokn3.so`, Debian's `libnss3`) is a full software PKCS#11 implementation
with AES-GCM, RFC 3394/5649 key wrap and RSA-OAEP with SHA-256 in the module itself: the second
implementation hsmbridge's HSM-facing tests run on (docs/hsm.md). Unlike SoftHSM2 it takes its
configuration from `CK_C_INITIALIZE_ARGS.pReserved` rather than an environment variable, so a
token is a directory plus an `init_args` string (`hsm.init_args`), and its "user private key"
slot is the token, labelled by `dbTokenDescription`.

A new database has an empty password and no user PIN; the security officer's login with the empty
PIN is what NSS allows exactly then, and `C_InitPIN` sets the user PIN (after that the SO PIN is
no longer empty-accepted: the database is initialised once).
"""

from __future__ import annotations

import glob
from pathlib import Path

#: where Debian and its derivatives put the softoken (multiarch first)
_CANDIDATES = ("/usr/lib/*/libsoftokn3.so", "/usr/lib/libsoftokn3.so", "/usr/lib64/libsoftokn3.so")


def find_module() -> str | None:
    for pattern in _CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            return path
    return None


def init_args(directory: Path | str, token_label: str) -> str:
    """The softoken's parameter string for an SQLite database in `directory` whose token is
    labelled `token_label` (at most 32 characters, PKCS#11's label field)."""
    if len(token_label) > 32 or "'" in token_label or "'" in str(directory):
        raise ValueError("the token label must be at most 32 characters; neither may contain a quote")
    return (
        f"configdir='sql:{directory}' certPrefix='' keyPrefix='' secmod='' flags= "
        f"dbTokenDescription='{token_label}'"
    )


def init_token(module: str, args: str, token_label: str, pin: str) -> None:
    """Give the new database in `args` its user PIN (through hsmbridge's loaded module, since a
    module is initialised once per process and NSS needs `args` at that moment)."""
    from hsmbridge.hsm.library import Pkcs11Library

    library = Pkcs11Library.load(module, args)
    token = library.lib.get_token(token_label=token_label)
    with token.open(rw=True, so_pin="") as session:
        session.init_pin(pin)
