"""Connections: the target accounts keys are pushed to, with write-only, sealed secrets.

Each cloud has a fixed set of fields, split into *settings* (stored as they are and shown: URLs,
region, instance or project id, access key id) and *secrets* (bearer token or API key, secret
access key and session token, Huawei SK), which are sealed under an HSM-held key
(core/sealing.py, purpose ``push-connection``, bound to the tenant and the connection id), never
returned, never logged and never put into an exception. Opening them happens only to build a
client for one call.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from hsmbridge.core.backend import wipe
from hsmbridge.core.clock import Clock
from hsmbridge.core.principal import CallContext
from hsmbridge.core.sealing import Sealer
from hsmbridge.core.store.push_records import CLOUDS, PushConnection
from hsmbridge.errors import InvalidInput, NotFound, Reason
from hsmbridge.push.clouds.base import CloudClient

SEALING_PURPOSE = "push-connection"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class CloudFields:
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    #: secret fields: at least one of `sealed_one_of` is required, the rest are optional
    sealed_one_of: tuple[str, ...] = ()
    sealed_optional: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()


FIELDS: Mapping[str, CloudFields] = {
    "ibm": CloudFields(
        required=("url", "instance_id"),
        optional=("iam_url",),
        sealed_one_of=("bearer_token", "api_key"),
        urls=("url", "iam_url"),
    ),
    "aws": CloudFields(
        required=("region", "access_key_id"),
        optional=("endpoint",),
        sealed_one_of=("secret_access_key",),
        sealed_optional=("session_token",),
        urls=("endpoint",),
    ),
    "huawei": CloudFields(
        required=("endpoint", "project_id", "access_key"),
        optional=("region",),
        sealed_one_of=("secret_key",),
        urls=("endpoint",),
    ),
}

ClientFactory = Callable[[str, Mapping[str, Any], Mapping[str, str]], CloudClient]


def require_cloud(cloud: str) -> str:
    if cloud not in CLOUDS:
        raise InvalidInput(
            f"unknown cloud {cloud!r}; supported: {', '.join(CLOUDS)}",
            reason=Reason.INVALID_FIELD,
            target="cloud",
        )
    return cloud


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 4096 or not value.isprintable():
        raise InvalidInput(f"{name} must be a printable string", reason=Reason.INVALID_FIELD, target=name)
    return value


def split_fields(cloud: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(settings, secrets) of a create request; 400 naming the first bad or missing field."""
    spec = FIELDS[require_cloud(cloud)]
    known = {
        "name",
        "cloud",
        "timeout",
        *spec.required,
        *spec.optional,
        *spec.sealed_one_of,
        *spec.sealed_optional,
    }
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r} for a {cloud} connection; fields: {', '.join(sorted(known))}",
            reason=Reason.INVALID_FIELD,
            target=unknown[0],
        )
    settings: dict[str, Any] = {}
    for name in (*spec.required, *spec.optional):
        value = _text(body, name)
        if value is None:
            if name in spec.required:
                raise InvalidInput(
                    f"{name} is required for a {cloud} connection", reason=Reason.MISSING_FIELD, target=name
                )
            continue
        if name in spec.urls:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidInput(f"{name} must be an http(s) URL", reason=Reason.INVALID_FIELD, target=name)
            value = value.rstrip("/")
        settings[name] = value
    timeout = body.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0.1 <= timeout <= 120:
            raise InvalidInput(
                "timeout must be 0.1-120 seconds", reason=Reason.INVALID_FIELD, target="timeout"
            )
        settings["timeout"] = float(timeout)
    secrets = {
        n: v for n in (*spec.sealed_one_of, *spec.sealed_optional) if (v := _text(body, n)) is not None
    }
    if not any(n in secrets for n in spec.sealed_one_of):
        raise InvalidInput(
            f"a {cloud} connection needs {' or '.join(spec.sealed_one_of)}",
            reason=Reason.MISSING_FIELD,
            target=spec.sealed_one_of[0],
        )
    return settings, secrets


def _context(tenant: str, connection_id: str) -> bytes:
    return f"{tenant}\x00{connection_id}".encode()


class ConnectionService:
    def __init__(self, store: Any, sealer: Sealer, clock: Clock, clients: ClientFactory) -> None:
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self._clients = clients

    def create(self, ctx: CallContext, body: Mapping[str, Any]) -> PushConnection:
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidInput(
                "name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
                reason=Reason.INVALID_FIELD if name else Reason.MISSING_FIELD,
                target="name",
            )
        cloud = body.get("cloud")
        if not isinstance(cloud, str):
            raise InvalidInput(
                f"cloud is required: one of {', '.join(CLOUDS)}", reason=Reason.MISSING_FIELD, target="cloud"
            )
        settings, secrets = split_fields(cloud, body)
        connection_id = str(uuid.uuid4())
        plaintext = bytearray(json.dumps(secrets).encode())
        try:
            sealed = self._sealer.seal(SEALING_PURPOSE, plaintext, _context(ctx.tenant, connection_id))
        finally:
            wipe(plaintext)
        now = self._clock.now()
        connection = PushConnection(
            tenant=ctx.tenant,
            id=connection_id,
            name=name,
            cloud=cloud,
            settings={**settings, "secrets_set": sorted(secrets)},
            sealed_secret=sealed,
            created_at=now,
            created_by=ctx.actor,
            updated_at=now,
        )
        with self._store.transaction() as tx:
            tx.insert_push_connection(connection)
        return connection

    def list(self, ctx: CallContext) -> list[PushConnection]:
        return cast(list[PushConnection], self._store.list_push_connections(ctx.tenant))

    def get(self, ctx: CallContext, ref: str) -> PushConnection:
        connection = self._store.get_push_connection(ctx.tenant, ref)
        if connection is None:
            raise NotFound("connection not found", reason=Reason.NOT_FOUND, target="connection")
        return cast(PushConnection, connection)

    def delete(self, ctx: CallContext, ref: str) -> None:
        connection = self.get(ctx, ref)
        with self._store.transaction() as tx:
            tx.delete_push_connection(ctx.tenant, connection.id)

    def client(self, connection: PushConnection) -> CloudClient:
        """A client holding the opened secrets; the plaintext buffer is wiped here."""
        opened = self._sealer.open(
            SEALING_PURPOSE, connection.sealed_secret, _context(connection.tenant, connection.id)
        )
        try:
            secrets = json.loads(bytes(opened))
        finally:
            wipe(opened)
        settings = {k: v for k, v in connection.settings.items() if k != "secrets_set"}
        return self._clients(connection.cloud, settings, secrets)

    def test(self, ctx: CallContext, ref: str) -> dict[str, Any]:
        connection = self.get(ctx, ref)
        return {
            "connection": connection.id,
            "cloud": connection.cloud,
            "ok": True,
            **self.client(connection).test(),
        }
