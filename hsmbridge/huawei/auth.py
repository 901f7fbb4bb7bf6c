"""Who calls the Huawei routes: AK/SK-signed requests (as huaweicloudsdkkms sends them) or the
seeds' ``X-Auth-Token``, turned into the same `Identity` the security gate admits for Key Protect.

Why the identity is scoped per request: an access key maps to a principal, roles and the *projects*
it may use; the gate checks instances, and a project's instance is ``huawei:{project_id}``
(`tenant_for`), a string no Key Protect instance (a GUID) can be. So the identity handed to the gate
may use exactly that one instance, or none when the project is not allowed — and the gate's own
instance check, roles, rate limits and audit then apply unchanged.

``X-Auth-Token`` goes to the REST authenticator as a bearer token (dev tokens, configured tokens or
JWTs, security/config.py); such an identity must name ``huawei:{project_id}`` among its instances
(or any instance) to pass the gate.

Config (``[huawei]``): each access key's SK is read from a 0600 file (``secret_key_file``) — HMAC
verification needs the SK itself, so it cannot be kept as a digest the way bearer tokens are; keeping
it out of the main config file means a config dump never shows it. Dev mode adds one AK/SK pair
(printed, or fixed by HSMBRIDGE_DEV_HUAWEI_AK / HSMBRIDGE_DEV_HUAWEI_SK) usable with any project.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from hsmbridge.security.aksk import AkSkVerifier, SignedRequest
from hsmbridge.security.jwt import CredentialsRejected
from hsmbridge.security.principals import Identity, parse_instances, parse_roles
from hsmbridge.security.secret_files import read_secret_file

TENANT_PREFIX = "huawei:"
DEV_AK_ENV = "HSMBRIDGE_DEV_HUAWEI_AK"
DEV_SK_ENV = "HSMBRIDGE_DEV_HUAWEI_SK"
DEV_PRINCIPAL = "huawei-dev"
AUTH_TOKEN_HEADER = "x-auth-token"
_PROJECT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def tenant_for(project_id: str) -> str:
    return TENANT_PREFIX + project_id


def valid_project(project_id: str) -> bool:
    return bool(_PROJECT.fullmatch(project_id))


class AccessKeyConfig(BaseModel):
    """One ``[[huawei.access_keys]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access_key: str = Field(pattern=r"^[A-Za-z0-9]{8,128}$")
    #: a file holding the SK, mode 0600 (never the SK itself in the config)
    secret_key_file: str
    principal: str = Field(min_length=1, max_length=256)
    roles: list[str] = Field(default_factory=lambda: ["Writer"])
    #: project ids this key may use; ``["*"]`` any
    projects: list[str] = Field(default_factory=list)


class HuaweiConfig(BaseModel):
    """``[huawei]``: the Huawei Cloud KMS API v1.0 on the REST listener (docs/operating.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: RSAES_PKCS1_V1_5 import wrapping: a padding-oracle risk (Bleichenbacher), so off unless set
    allow_pkcs1_v15: bool = False
    #: how far X-Sdk-Date may be from the server clock, in seconds
    max_clock_skew: int = Field(900, ge=1, le=3600)
    access_keys: list[AccessKeyConfig] = Field(default_factory=list)


@dataclass(frozen=True)
class _Grant:
    principal: str
    roles: frozenset[str]
    key_purge: bool
    projects: frozenset[str] | None  # None: any project
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class DevAccessKey:
    access_key: str
    secret_key: str = field(repr=False)
    generated: bool = False


def dev_access_key(environ: Mapping[str, str] | None = None) -> DevAccessKey:
    env = os.environ if environ is None else environ
    ak = env.get(DEV_AK_ENV, "").strip()
    sk = env.get(DEV_SK_ENV, "").strip()
    generated = not (ak and sk)
    return DevAccessKey(
        ak or "HSMBRIDGEDEV" + secrets.token_hex(6).upper(), sk or secrets.token_urlsafe(30), generated
    )


class HuaweiAuthenticator:
    """AK/SK and X-Auth-Token → an `Identity` scoped to the request's project."""

    def __init__(
        self,
        grants: Mapping[str, _Grant],
        token_authenticator: Callable[[str | None], Identity] | None,
        *,
        max_skew: timedelta,
    ) -> None:
        self._grants = dict(grants)
        self._token_authenticator = token_authenticator
        self._verifier = AkSkVerifier(self._secret_for, max_skew=max_skew)

    @classmethod
    def from_config(
        cls,
        config: HuaweiConfig,
        token_authenticator: Callable[[str | None], Identity] | None,
        dev: DevAccessKey | None = None,
    ) -> HuaweiAuthenticator:
        grants: dict[str, _Grant] = {}
        for entry in config.access_keys:
            roles, purge = parse_roles(entry.roles, strict=True)
            secret = read_secret_file(entry.secret_key_file)
            grants[entry.access_key] = _Grant(
                entry.principal, roles, purge, parse_instances(entry.projects), bytes(secret)
            )
        if dev is not None:
            grants[dev.access_key] = _Grant(
                DEV_PRINCIPAL, frozenset({"Manager"}), True, None, dev.secret_key.encode()
            )
        return cls(
            grants,
            token_authenticator,
            max_skew=timedelta(seconds=config.max_clock_skew),
        )

    def _secret_for(self, access_key: str) -> bytes | None:
        grant = self._grants.get(access_key)
        return None if grant is None else grant.secret

    def identify(self, request: SignedRequest, project_id: str) -> Identity:
        token = next((v for k, v in request.headers.items() if k.lower() == AUTH_TOKEN_HEADER), None)
        has_signature = any(k.lower() == "authorization" for k in request.headers)
        if token is not None and not has_signature:
            if self._token_authenticator is None:
                raise CredentialsRejected("token_not_accepted")
            return self._token_authenticator(f"Bearer {token.strip()}")
        access_key = self._verifier.verify(request)
        grant = self._grants[access_key]
        allowed = grant.projects is None or project_id in grant.projects
        return Identity(
            grant.principal,
            instances=frozenset({tenant_for(project_id)}) if allowed else frozenset(),
            roles=grant.roles,
            key_purge=grant.key_purge,
            method="aksk",
        )
