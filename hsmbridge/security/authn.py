"""Authentication: static tokens, JWTs and client certificates behind one `Authenticator`.

The same bearer credential works on both transports — REST's ``Authorization: Bearer …`` header
and gRPC's ``authorization`` metadata — so one object implements both protocols:

- `hsmbridge.rest.context.RestAuthenticator`: ``authenticate(authorization) -> Principal``
- `hsmbridge.grpc.context.Authenticator`: ``authenticate(metadata, peer) -> Principal``, plus an
  optional ``auth_context`` (``context.auth_context()``) through which mutual TLS identities
  arrive. `authenticate_grpc(context)` reads all three from a servicer context.

Order of decision:
1. A bearer token, if present, decides: a static token (hash lookup, constant time) or else, if
   it has JWT shape, a JWT. A present-but-bad token is a failure even on an mTLS channel — a
   caller that sends credentials means them, and silently falling back to the certificate would
   hide a broken token.
2. No token: a client certificate mapped by ``[[security.mtls.clients]]``.
3. Otherwise `CredentialsRejected`.

Every failure raises `CredentialsRejected` (an `Unauthenticated`: 401 / UNAUTHENTICATED) with
Key Protect's one generic message; its `cause` (``missing``, ``unknown_token``, ``expired``…) is
for audit and logs only. Nothing about the presented token ever reaches a message or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc

from hsmbridge.core.principal import Principal
from hsmbridge.security.jwt import CredentialsRejected, JwtVerifier
from hsmbridge.security.principals import Identity, to_principal
from hsmbridge.security.tls import AuthContext, CertificateMapper, PeerCertificate, peer_certificate
from hsmbridge.security.tokens import MAX_TOKEN_LENGTH, StaticTokens

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None when absent or empty.
    Another scheme (Basic, …) is a failure, not an absence."""
    if authorization is None:
        return None
    value = authorization.strip()
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        raise CredentialsRejected("unsupported_scheme")
    token = token.strip()
    if not token:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        raise CredentialsRejected("malformed")
    return token


class Authenticator:
    """Static tokens + JWTs + mTLS identities. Any part may be absent; with none configured
    every call is refused."""

    def __init__(
        self,
        tokens: StaticTokens | None = None,
        jwt: JwtVerifier | None = None,
        certificates: CertificateMapper | None = None,
    ) -> None:
        self.tokens = tokens
        self.jwt = jwt
        self.certificates = certificates

    # Identities.

    def identify(self, authorization: str | None, certificate: PeerCertificate | None = None) -> Identity:
        try:
            token = bearer_token(authorization)
            if token is None:
                identity = self.certificates.identify(certificate) if self.certificates else None
                if identity is None:
                    raise CredentialsRejected("missing")
                return identity
            if self.tokens is not None:
                identity = self.tokens.lookup(token)
                if identity is not None:
                    return identity
            if self.jwt is not None and self.jwt.looks_like_jwt(token):
                return self.jwt.verify(token)
            raise CredentialsRejected("unknown_token")
        except CredentialsRejected as exc:
            log.debug("authentication failed: %s", exc.cause)
            raise

    def identify_rest(self, authorization: str | None) -> Identity:
        return self.identify(authorization)

    def identify_grpc(
        self, metadata: Mapping[str, str], peer: str = "", auth_context: AuthContext | None = None
    ) -> Identity:
        value = metadata.get(AUTHORIZATION)
        return self.identify(value if isinstance(value, str) else None, peer_certificate(auth_context))

    def identify_context(self, context: grpc.aio.ServicerContext) -> Identity:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        return self.identify_grpc(metadata, context.peer(), context.auth_context())

    # The transport protocols.

    def authenticate(
        self,
        credentials: Mapping[str, str] | str | None,
        peer: str | None = None,
        auth_context: AuthContext | None = None,
    ) -> Principal:
        """Both protocols in one method: a mapping is gRPC metadata, a string (or None) is
        REST's Authorization header."""
        if isinstance(credentials, Mapping):
            return to_principal(self.identify_grpc(credentials, peer or "", auth_context))
        return to_principal(self.identify_rest(credentials))

    def authenticate_grpc(self, context: grpc.aio.ServicerContext) -> Principal:
        return to_principal(self.identify_context(context))
