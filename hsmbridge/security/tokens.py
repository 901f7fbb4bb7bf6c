"""Static API tokens: long random bearer strings configured as SHA-256 digests.

Why digests only: the configuration file is read by deploy tooling, backed up and pasted into
tickets; a digest there grants nothing. Why unsalted SHA-256 is enough: the tokens are 256-bit
random strings from `generate_token` (never passwords), so there is nothing to brute-force and a
slow KDF would only cost latency on every call. A configuration that carries a token in the clear
(`token = "…"`) is refused, not silently hashed, so nobody gets used to writing secrets there.

Lookup hashes the presented token once and compares it with *every* configured digest using
`hmac.compare_digest`, without stopping at a match, so the time taken does not depend on which
entry (if any) matched.

Make a token (prints the token once, and the TOML entry that holds only its digest):

    python -m hsmbridge.security.tokens --principal svc-payments --instance tenant-a --role Writer
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import secrets
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hsmbridge.errors import Unauthenticated
from hsmbridge.security.principals import Identity, parse_instances, parse_roles

#: Prefix of generated tokens: lets secret scanners recognise a leaked token, and keeps a static
#: token distinguishable from a JWT (which always contains two dots).
TOKEN_PREFIX = "hsmb_"
#: Longer bearer strings are refused before hashing (a cheap guard against request amplification).
MAX_TOKEN_LENGTH = 8192
#: The one message every authentication failure carries: it says nothing about the token.
UNAUTHENTICATED_MSG = "Unauthorized: The user does not have access to the specified resource."

_HEX64 = re.compile(r"[0-9a-f]{64}")


class StaticTokenConfig(BaseModel):
    """One ``[[security.tokens]]`` entry."""

    # hide_input_in_errors: a token pasted into the wrong field must not reappear in an error.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token_sha256: str
    principal: str = Field(min_length=1, max_length=256)
    #: the instances this token may use, or "*" for any
    instances: list[str] | Literal["*"]
    roles: list[str] = Field(default_factory=list)
    key_purge: bool = False

    @model_validator(mode="before")
    @classmethod
    def _refuse_cleartext(cls, data: Any) -> Any:
        if isinstance(data, dict) and ({"token", "secret", "value"} & set(data)):
            raise ValueError(
                "static tokens are configured by digest only: replace `token` with "
                "`token_sha256` (python -m hsmbridge.security.tokens prints both)"
            )
        return data

    @field_validator("token_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not _HEX64.fullmatch(value):
            raise ValueError("token_sha256 must be the 64 hex digits of the token's SHA-256 digest")
        return value

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: list[str]) -> list[str]:
        parse_roles(value, strict=True)
        return value

    @field_validator("instances")
    @classmethod
    def _some_instances(cls, value: list[str] | str) -> list[str] | str:
        if not isinstance(value, str) and not [v for v in value if v.strip()]:
            raise ValueError('instances must list at least one instance, or be "*"')
        return value

    def identity(self) -> Identity:
        roles, purge = parse_roles(self.roles, strict=True)
        return Identity(
            self.principal,
            instances=parse_instances(self.instances),
            roles=roles,
            key_purge=self.key_purge or purge,
            method="token",
        )


def hash_token(token: str) -> str:
    """The hex SHA-256 digest a configuration stores for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> tuple[str, str]:
    """A new random token and its digest. Show the token once; store only the digest."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


def toml_entry(
    digest: str,
    principal: str,
    instances: Sequence[str] | Literal["*"],
    roles: Iterable[str],
    key_purge: bool = False,
) -> str:
    """The ``[[security.tokens]]`` TOML block for a digest (JSON strings are valid TOML strings)."""
    inst = '"*"' if instances == "*" else json.dumps(list(instances))
    return (
        "[[security.tokens]]\n"
        f"token_sha256 = {json.dumps(digest)}\n"
        f"principal = {json.dumps(principal)}\n"
        f"instances = {inst}\n"
        f"roles = {json.dumps(list(roles))}\n"
        f"key_purge = {'true' if key_purge else 'false'}\n"
    )


class StaticTokens:
    """The configured tokens, as digests only."""

    def __init__(self, entries: Iterable[StaticTokenConfig]) -> None:
        table: list[tuple[bytes, Identity]] = []
        seen: set[bytes] = set()
        for entry in entries:
            digest = bytes.fromhex(entry.token_sha256)
            if digest in seen:
                raise ValueError("two [[security.tokens]] entries have the same token_sha256")
            seen.add(digest)
            table.append((digest, entry.identity()))
        self._table = tuple(table)

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, token: str) -> Identity | None:
        """The identity of a presented token, or None. Constant time in which entry matched."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        presented = hashlib.sha256(token.encode()).digest()
        match: Identity | None = None
        for digest, identity in self._table:
            if hmac.compare_digest(digest, presented):
                match = identity
        return match

    def authenticate(self, token: str) -> Identity:
        identity = self.lookup(token)
        if identity is None:
            raise Unauthenticated(UNAUTHENTICATED_MSG)
        return identity


def main(argv: Sequence[str] | None = None) -> int:
    """Print a new token and the configuration entry for it."""
    parser = argparse.ArgumentParser(
        prog="python -m hsmbridge.security.tokens",
        description="Generate a static API token and the [[security.tokens]] entry holding its digest.",
    )
    parser.add_argument("--principal", required=True, help="principal id (audit, createdBy, dual auth)")
    parser.add_argument(
        "--instance", action="append", default=[], help="an instance it may use (repeatable); '*' for any"
    )
    parser.add_argument("--role", action="append", default=[], help="Reader, ReaderPlus, Writer, Manager")
    parser.add_argument("--key-purge", action="store_true", help="grant KeyPurge (purging deleted keys)")
    args = parser.parse_args(argv)
    instances: list[str] | Literal["*"] = "*" if "*" in args.instance else list(args.instance)
    if not instances:
        parser.error("give at least one --instance (or --instance '*')")
    try:
        parse_roles(args.role, strict=True)
    except ValueError as exc:
        parser.error(str(exc))
    token, digest = generate_token()
    entry = toml_entry(digest, args.principal, instances, args.role, args.key_purge)
    StaticTokenConfig.model_validate(
        {
            "token_sha256": digest,
            "principal": args.principal,
            "instances": instances,
            "roles": args.role,
            "key_purge": args.key_purge,
        }
    )
    sys.stderr.write("token (shown once; give it to the client, store it nowhere else):\n")
    sys.stdout.write(token + "\n")
    sys.stderr.write("\nconfiguration entry (holds only the digest):\n\n" + entry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
