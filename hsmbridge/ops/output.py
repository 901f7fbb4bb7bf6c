"""Tables for people (rich), JSON for scripts: the same records either way.

JSON is the protobuf message's canonical JSON mapping with the proto field names (bytes as
base64, timestamps as RFC 3339), so a script can feed it to anything that speaks the gRPC API.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hsmbridge.v1 import keys_pb2

_STATE_PREFIX = "KEY_STATE_"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


#: columns whose values are copied and pasted: never folded mid-value
UNBROKEN = frozenset({"id", "version id", "ciphertext", "plaintext", "rewrapped", "nonce"})


def console(stderr: bool = False) -> Console:
    """A terminal gets its own width; a pipe or file gets lines as long as the values, so ids
    and base64 are never folded (rich assumes 80 columns there)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(file=stream, width=width, highlight=False)


def when(stamp: Timestamp, present: bool = True) -> str:
    if not present or (stamp.seconds == 0 and stamp.nanos == 0):
        return ""
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


def state_name(state: int) -> str:
    return keys_pb2.KeyState.Name(state).removeprefix(_STATE_PREFIX).lower()


def key_row(key: keys_pb2.Key) -> dict[str, str]:
    return {
        "id": key.id,
        "name": key.name,
        "state": state_name(key.state),
        # ListKeys sends the current version's id only; GetKey and the mutations send its number
        "version": str(key.current_version.number or ""),
        "aliases": ", ".join(key.aliases),
        "key ring": key.key_ring,
        "created": when(key.create_time, key.HasField("create_time")),
    }


def key_details(key: keys_pb2.Key) -> dict[str, str]:
    """Everything `keys get` shows about one key (no material: the API has none to show)."""
    return {
        **key_row(key),
        "description": key.description,
        "extractable": "yes" if key.extractable else "no",
        "imported": "yes" if key.imported else "no",
        "bits": str(key.bit_length or ""),
        "version id": key.current_version.id,
        "created by": key.created_by,
        "rotated": when(key.rotate_time, key.HasField("rotate_time")),
        "expires": when(key.expire_time, key.HasField("expire_time")),
        "deleted": when(key.delete_time, key.HasField("delete_time")),
        "deleted by": key.deleted_by,
    }


def table(rows: Sequence[Mapping[str, str]], columns: Iterable[str] | None = None, title: str = "") -> None:
    names = list(columns or (rows[0].keys() if rows else ()))
    grid = Table(title=title or None, show_edge=False, header_style="bold")
    for name in names:
        grid.add_column(name, overflow="fold", no_wrap=name in UNBROKEN)
    for row in rows:
        grid.add_row(*(row.get(name, "") for name in names))
    console().print(grid)


def fields(record: Mapping[str, str]) -> None:
    """One record as `name  value` lines (empty values left out, no trailing padding)."""
    shown = {name: value for name, value in record.items() if value}
    width = max(map(len, shown), default=0)
    out = console()
    for name, value in shown.items():
        out.print(Text.assemble((name.ljust(width), "bold"), "  ", value))
