"""Development identities: every right, but still through the gate (so dev traffic is authorised,
rate-limited and audited exactly like production traffic, and the same code paths are tested).

REST: the printed dev token (and any extra dev tokens) from a table, compared by SHA-256 digest in
constant time. gRPC: the same bearer tokens, or — for local tools on loopback — the principal the
caller names in ``x-hsmbridge-principal`` (default ``dev``). Only `hsmbridge dev` and a server
with ``server.dev = true`` (loopback only) use this.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping

import grpc

from hsmbridge.security.authn import bearer_token
from hsmbridge.security.jwt import CredentialsRejected
from hsmbridge.security.principals import Identity, Role

PRINCIPAL_METADATA = "x-hsmbridge-principal"
DEFAULT_DEV_PRINCIPAL = "dev"


@functools.lru_cache(maxsize=1024)  # one frozen Identity per dev principal, not one per call
def full_rights(principal: str) -> Identity:
    return Identity(
        principal, instances=None, roles=frozenset({Role.MANAGER.iam_name}), key_purge=True, method="dev"
    )


class DevIdentities:
    def __init__(
        self, tokens: Mapping[str, str] | None = None, *, trust_principal_metadata: bool = True
    ) -> None:
        self._digests = {hashlib.sha256(t.encode()).digest(): p for t, p in (tokens or {}).items()}
        self._trust_metadata = trust_principal_metadata

    def _lookup(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, principal in self._digests.items():
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise CredentialsRejected("unknown_token")
        return found

    def identify_rest(self, authorization: str | None) -> Identity:
        token = bearer_token(authorization)
        if token is None:
            raise CredentialsRejected("missing")
        return full_rights(self._lookup(token))

    def identify_grpc(self, metadata: Mapping[str, str]) -> Identity:
        token = bearer_token(metadata.get("authorization"))
        if token is not None:
            return full_rights(self._lookup(token))
        if not self._trust_metadata:
            raise CredentialsRejected("missing")
        return full_rights(metadata.get(PRINCIPAL_METADATA) or DEFAULT_DEV_PRINCIPAL)

    def identify_context(self, context: grpc.aio.ServicerContext) -> Identity:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        return self.identify_grpc(metadata)
