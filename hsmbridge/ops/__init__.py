"""The operator CLI: `hsmbridge keys ...`, `wrap`, `unwrap`, `import-token ...`, `rewrap`.

Like `bao write transit/...` or `ibmcloud kp keys`: everyday key management from a shell, over
the daemon's gRPC API (so it works against any running daemon, dev or production, and never
touches the HSM or the store itself). One module per command group; `register` adds them all to
`hsmbridge`'s argparse tree. Connection settings and error reporting: `ops/connection.py`.
"""

from __future__ import annotations

import argparse

from hsmbridge.ops import crypto, import_token, keys, rewrap
from hsmbridge.ops.connection import common_options


def register(sub: argparse._SubParsersAction) -> None:
    common = common_options()
    for group in (keys, crypto, import_token, rewrap):
        group.register(sub, common)
