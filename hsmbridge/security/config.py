"""``[security]``: the configuration of every security module in one section, and builders.

Meant to become ``Config.security`` in `hsmbridge.config` (a pydantic section like the others).
TLS belongs to each listener instead (``[grpc.tls]``, ``[rest.tls]``, see `tls.TlsConfig`),
because it describes a socket, not a policy.

    [[security.tokens]]
    token_sha256 = "<64 hex>"            # python -m hsmbridge.security.tokens prints it
    principal = "svc-payments"
    instances = ["tenant-a"]             # or "*"
    roles = ["Writer"]
    key_purge = false

    [security.jwt]
    issuers = ["https://iam.cloud.ibm.com/identity"]
    audiences = ["hsmbridge"]
    jwks_file = "/etc/hsmbridge/idp-jwks.json"
    instances_claim = "kms_instances"
    roles_claim = "kms_roles"

    [[security.mtls.clients]]
    san_uri = "spiffe://example.org/ns/payments/sa/worker"
    principal = "svc-payments-worker"
    instances = ["tenant-a"]
    roles = ["Reader"]

    [security.authz.overrides]
    "kms.secrets.wrap" = "Writer"

    [security.audit]
    sink = "file"
    path = "/var/log/hsmbridge/audit.jsonl"
    fail_closed = true

    [security.rate_limit.classes]
    crypto = { rate = 1000, burst = 2000 }
    manage = { rate = 20, burst = 50 }
    read = { rate = 200, burst = 400 }
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from hsmbridge.security.audit import AuditConfig, AuditLog, build_audit_log
from hsmbridge.security.authn import Authenticator
from hsmbridge.security.authz import Authorizer, AuthzConfig
from hsmbridge.security.gate import SecurityGate
from hsmbridge.security.jwt import JwtConfig, JwtVerifier
from hsmbridge.security.ratelimit import RateLimitConfig, RateLimiter
from hsmbridge.security.tls import CertificateMapper, MtlsConfig
from hsmbridge.security.tokens import StaticTokenConfig, StaticTokens


class SecurityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[StaticTokenConfig] = Field(default_factory=list)
    jwt: JwtConfig | None = None
    mtls: MtlsConfig = Field(default_factory=MtlsConfig)
    authz: AuthzConfig = Field(default_factory=AuthzConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)

    @property
    def has_credentials(self) -> bool:
        """Is any way to authenticate configured? A non-development server must refuse to start
        without one: it would refuse every call anyway."""
        return bool(self.tokens or self.jwt or self.mtls.clients)


def build_authenticator(config: SecurityConfig) -> Authenticator:
    return Authenticator(
        tokens=StaticTokens(config.tokens) if config.tokens else None,
        jwt=JwtVerifier(config.jwt) if config.jwt else None,
        certificates=CertificateMapper(config.mtls) if config.mtls.clients else None,
    )


def build_gate(
    config: SecurityConfig,
    *,
    audit: AuditLog | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SecurityGate:
    """The gate both transports share (one rate limiter, one audit log for the process)."""
    return SecurityGate(
        Authorizer(config.authz),
        audit if audit is not None else build_audit_log(config.audit),
        RateLimiter.from_config(config.rate_limit, clock=clock) if config.rate_limit.enabled else None,
    )
