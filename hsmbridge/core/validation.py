"""Input rules that belong to the domain, whatever transport the input came through.

The bounds are Key Protect's (names 2–90, descriptions ≤ 240, ≤ 5 aliases of 2–90 characters,
not a UUID, not a reserved route word), so the gRPC API and the REST facade refuse the same input.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from hsmbridge.errors import InvalidInput, Reason

MAX_ALIASES_PER_KEY = 5
MAX_STANDARD_PAYLOAD = 7500
ROOT_KEY_LENGTHS = (16, 24, 32)
RESERVED_ALIASES = frozenset(
    {
        "allowed_ip",
        "key",
        "keys",
        "metadata",
        "policy",
        "policies",
        "registration",
        "registrations",
        "ring",
        "rings",
        "rotate",
        "wrap",
        "unwrap",
        "rewrap",
        "version",
        "versions",
    }
)
_ALIAS = re.compile(r"^[A-Za-z0-9_-]{2,90}$")
_KEY_RING = re.compile(r"^[A-Za-z0-9-]{2,100}$")


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not 2 <= len(name) <= 90 or not name.isprintable():
        raise InvalidInput(
            "The field 'name' must be: a string of 2 to 90 printable characters",
            reason=Reason.INVALID_FIELD,
            target="name",
        )
    return name


def validate_description(description: str | None) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > 240 or not description.isprintable():
        raise InvalidInput(
            "The field 'description' must be: a string of at most 240 printable characters",
            reason=Reason.INVALID_FIELD,
            target="description",
        )
    return description


def validate_alias(alias: str, *, target: str = "aliases") -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias) or alias in RESERVED_ALIASES or is_uuid(alias):
        raise InvalidInput(
            "The alias must be: 2 to 90 alphanumeric characters, '-' or '_', not a version 4 UUID "
            "and not a reserved name",
            reason=Reason.INVALID_FIELD,
            target=target,
        )
    return alias


def validate_aliases(aliases: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(validate_alias(a) for a in aliases))
    if len(unique) > MAX_ALIASES_PER_KEY:
        raise InvalidInput(
            f"A key can have at most {MAX_ALIASES_PER_KEY} aliases",
            reason=Reason.ALIAS_QUOTA,
            target="aliases",
        )
    return unique


def validate_key_ring_id(ring: str) -> str:
    if not isinstance(ring, str) or not _KEY_RING.match(ring):
        raise InvalidInput(
            "The key ring id must be: 2 to 100 characters matching ^[a-zA-Z0-9-]*$",
            reason=Reason.INVALID_FIELD,
            target="keyRingID",
        )
    return ring


def validate_material(material: bytes | bytearray, *, root: bool) -> None:
    if root and len(material) not in ROOT_KEY_LENGTHS:
        raise InvalidInput(
            "The field 'payload' must be: 16, 24 or 32 bytes of key material for a root key",
            reason=Reason.INVALID_FIELD,
            target="payload",
        )
    if not root and not 1 <= len(material) <= MAX_STANDARD_PAYLOAD:
        raise InvalidInput(
            f"The field 'payload' must be: 1 to {MAX_STANDARD_PAYLOAD} bytes for a standard key",
            reason=Reason.INVALID_FIELD,
            target="payload",
        )
