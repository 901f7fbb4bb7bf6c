"""Bearer JWTs from the operator's identity provider, verified offline with PyJWT.

IBM IAM access tokens are RS256 JWTs; self-hosted deployments plug in their own IdP (Keycloak,
Dex, Entra ID, …). Verification is deliberately offline — keys come from a JWKS file or PEM files
the operator manages — so an attacker-supplied header (``jku``, ``x5u``, ``jwk``) can never point
us at a key, and the hot path never waits on the network.

What is enforced, and why:
- ``alg`` from an explicit allow-list (RS256, ES256) checked before anything else; ``none`` and
  every HMAC algorithm are impossible (an RSA public key used as an HS256 secret is the classic
  confusion attack). Each key is bound to exactly one algorithm by its type, and the JWKS loader
  ignores symmetric (``oct``) keys.
- ``kid``: a token naming a key we do not have is rejected (no fallback to "try all keys"); a
  token without ``kid`` is tried against the keys of its algorithm.
- ``crit`` headers are rejected: we implement no JWS extension, and RFC 7515 says a verifier that
  does not understand a critical extension must reject.
- ``iss`` and ``aud`` must match configured values; ``exp`` and ``iat`` are required by default;
  ``nbf``/``iat``/``exp`` get a configurable leeway for clock skew (default 60 s).
- Claims → `Identity`: the principal from the first present of `principal_claims` (IBM IAM puts
  the account-wide identity in ``iam_id``, standard IdPs in ``sub``); instances and roles from
  named claims (dotted paths reach nested claims such as Keycloak's ``realm_access.roles``). A
  missing principal is always a rejection; a missing instances/roles claim is one unless the
  configuration gives a default. Role names go through `role_map` and then Key Protect's names
  (``Writer``, ``crn:…:serviceRole:Writer``); foreign groups are ignored.

Every failure raises `CredentialsRejected` (an `Unauthenticated`) with the one generic message;
`cause` is a fixed word for logs and audit, never derived from the token.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hsmbridge.errors import Unauthenticated
from hsmbridge.security.principals import Identity, parse_instances, parse_roles

log = logging.getLogger(__name__)

IBM_IAM_ISSUER = "https://iam.cloud.ibm.com/identity"
ALLOWED_ALGORITHMS = ("RS256", "ES256")
#: Longer bearer strings are refused before parsing.
MAX_JWT_LENGTH = 16384
MIN_RSA_BITS = 2048
UNAUTHENTICATED_MSG = "Unauthorized: The user does not have access to the specified resource."

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
Algorithm = Literal["RS256", "ES256"]


class CredentialsRejected(Unauthenticated):
    """An `Unauthenticated` that remembers why, as a fixed word (``expired``, ``bad_signature``…),
    for logs and audit. The message stays generic; `cause` never goes to the client."""

    def __init__(self, cause: str) -> None:
        super().__init__(UNAUTHENTICATED_MSG)
        self.cause = cause


class PemKeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a PEM public key or certificate
    path: str
    #: the ``kid`` tokens signed with it carry; None: tokens without ``kid`` (or any kid) may use it
    kid: str | None = None


class JwtConfig(BaseModel):
    """``[security.jwt]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuers: list[str] = Field(default_factory=lambda: [IBM_IAM_ISSUER], min_length=1)
    #: required: a token minted for another service must not work here
    audiences: list[str] = Field(min_length=1)
    jwks_file: str | None = None
    pem_keys: list[PemKeyConfig] = Field(default_factory=list)
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(ALLOWED_ALGORITHMS), min_length=1)
    leeway_seconds: float = Field(60.0, ge=0, le=600)
    #: claims a token must carry besides ``iss`` and ``aud`` (always required)
    required_claims: list[str] = Field(default_factory=lambda: ["exp", "iat"])
    #: refuse tokens issued longer ago than this (None: only ``exp`` limits a token's life)
    max_age_seconds: float | None = Field(None, gt=0)
    principal_claims: list[str] = Field(default_factory=lambda: ["iam_id", "sub"], min_length=1)
    instances_claim: str | None = "instances"
    roles_claim: str | None = "roles"
    #: used when the instances claim is absent; None: the claim is required
    default_instances: list[str] | Literal["*"] | None = None
    #: used when the roles claim is absent; None: the claim is required
    default_roles: list[str] | None = None
    #: IdP group/role name → Key Protect role name (``"kms-admins" = "Manager"``)
    role_map: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_keys(self) -> JwtConfig:
        if not self.jwks_file and not self.pem_keys:
            raise ValueError("security.jwt needs jwks_file or pem_keys")
        parse_roles(self.role_map.values(), strict=True)
        if self.default_roles is not None:
            parse_roles(self.default_roles, strict=True)
        return self


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key, bound to exactly one algorithm."""

    kid: str | None
    alg: str
    key: PublicKey


def _bind_algorithm(key: object, origin: str) -> tuple[str, PublicKey]:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{origin}: RSA keys shorter than {MIN_RSA_BITS} bits are refused")
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256", key
    raise ValueError(f"{origin}: only RSA (RS256) and EC P-256 (ES256) public keys are supported")


def load_pem_key(path: str | Path, kid: str | None = None) -> VerificationKey:
    """A PEM public key or X.509 certificate. A private key is refused: it does not belong on
    a verifier, and accepting it would teach operators to copy signing keys around."""
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path}: holds a private key; configure the public key only")
    if b"-----BEGIN CERTIFICATE-----" in data:
        key: object = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    alg, public = _bind_algorithm(key, str(path))
    return VerificationKey(kid, alg, public)


_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def parse_jwks(document: Mapping[str, Any], origin: str = "JWKS") -> list[VerificationKey]:
    """The usable signature keys of a JWKS. Keys for other uses or algorithms are skipped (IdPs
    publish several); a private or symmetric member refuses the whole document."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError(f"{origin}: not a JWKS (no 'keys' list)")
    keys: list[VerificationKey] = []
    for jwk in entries:
        if not isinstance(jwk, dict):
            continue
        if _PRIVATE_JWK_MEMBERS & set(jwk):
            raise ValueError(f"{origin}: holds private or symmetric key material; publish public keys only")
        if jwk.get("use", "sig") != "sig":
            continue
        kty = jwk.get("kty")
        if kty == "RSA":
            expected = "RS256"
            loader: Callable[[Any], Any] = RSAAlgorithm.from_jwk
        elif kty == "EC" and jwk.get("crv") == "P-256":
            expected = "ES256"
            loader = ECAlgorithm.from_jwk
        else:
            continue
        if jwk.get("alg", expected) != expected:
            continue
        kid = jwk.get("kid")
        try:
            alg, public = _bind_algorithm(loader(jwk), f"{origin} kid={kid!r}")
        except ValueError as exc:
            log.warning("skipping a JWKS key: %s", exc)
            continue
        except jwt.PyJWTError:
            log.warning("skipping a malformed JWKS key (kid %r) in %s", kid, origin)
            continue
        keys.append(VerificationKey(kid if isinstance(kid, str) else None, alg, public))
    return keys


def load_keys(config: JwtConfig) -> list[VerificationKey]:
    keys: list[VerificationKey] = []
    if config.jwks_file:
        try:
            document = json.loads(Path(config.jwks_file).read_text())
        except json.JSONDecodeError:
            raise ValueError(f"{config.jwks_file}: not valid JSON") from None
        if not isinstance(document, dict):
            raise ValueError(f"{config.jwks_file}: not a JWKS")
        keys.extend(parse_jwks(document, config.jwks_file))
    keys.extend(load_pem_key(k.path, k.kid) for k in config.pem_keys)
    keys = [k for k in keys if k.alg in config.algorithms]
    if not keys:
        raise ValueError("security.jwt: no usable RS256/ES256 verification key among the configured ones")
    return keys


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name; a dotted path reaches into nested objects when no claim has the full
    name (``realm_access.roles``)."""
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _strings(value: Any) -> list[str] | None:
    """A claim holding names: a JSON list of strings, or one string of space/comma separated
    names (the ``scope`` convention). Anything else is unusable."""
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


_JWT_CAUSES: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed"),
    (jwt.DecodeError, "malformed"),
)


def _cause(exc: Exception) -> str:
    for cls, cause in _JWT_CAUSES:
        if isinstance(exc, cls):
            return cause
    return "invalid"


class JwtVerifier:
    """Verifies bearer JWTs and maps their claims to an `Identity`. Thread-safe: state is
    replaced, never mutated, by `reload`."""

    def __init__(
        self,
        config: JwtConfig,
        keys: Sequence[VerificationKey] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._keys: tuple[VerificationKey, ...] = tuple(keys if keys is not None else load_keys(config))
        self._algorithms = frozenset(config.algorithms) & frozenset(ALLOWED_ALGORITHMS)
        self._required = sorted({"iss", "aud", *config.required_claims})
        self._clock = clock

    def reload(self) -> None:
        """Re-read the JWKS/PEM files (after the IdP rotated its keys)."""
        self._keys = tuple(load_keys(self.config))

    def looks_like_jwt(self, token: str) -> bool:
        return token.count(".") == 2 and len(token) <= MAX_JWT_LENGTH

    def verify(self, token: str) -> Identity:
        return self.identity(self.claims(token))

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claim set, or `CredentialsRejected`."""
        if not isinstance(token, str) or not self.looks_like_jwt(token):
            raise CredentialsRejected("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise CredentialsRejected("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise CredentialsRejected("algorithm_not_allowed")
        if "crit" in header:
            raise CredentialsRejected("unsupported_critical_header")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise CredentialsRejected("malformed")
        candidates = [k for k in self._keys if k.alg == alg and (kid is None or k.kid == kid)]
        if not candidates:
            raise CredentialsRejected("unknown_kid")
        last: Exception | None = None
        for candidate in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key=candidate.key,
                    algorithms=[alg],
                    audience=self.config.audiences,
                    issuer=self.config.issuers,
                    leeway=self.config.leeway_seconds,
                    options={"require": self._required, "verify_signature": True},
                )
            except jwt.InvalidSignatureError as exc:
                last = exc  # a key of the same algorithm without a kid may still match
                continue
            except jwt.PyJWTError as exc:
                raise CredentialsRejected(_cause(exc)) from None
            self._check_age(claims)
            return claims
        raise CredentialsRejected(_cause(last) if last else "bad_signature")

    def _check_age(self, claims: Mapping[str, Any]) -> None:
        max_age = self.config.max_age_seconds
        if max_age is None:
            return
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise CredentialsRejected("missing_claim")
        if self._clock() - iat > max_age + self.config.leeway_seconds:
            raise CredentialsRejected("too_old")

    def identity(self, claims: Mapping[str, Any]) -> Identity:
        """Map verified claims to an `Identity` (see the module docstring)."""
        cfg = self.config
        principal = next(
            (v for v in (claim(claims, c) for c in cfg.principal_claims) if isinstance(v, str) and v),
            None,
        )
        if principal is None or len(principal) > 256 or not principal.isprintable():
            raise CredentialsRejected("missing_claim")

        instances: frozenset[str] | None
        raw_instances = claim(claims, cfg.instances_claim) if cfg.instances_claim else None
        if raw_instances is None:
            if cfg.default_instances is None:
                raise CredentialsRejected("missing_claim")
            instances = parse_instances(cfg.default_instances)
        else:
            names = _strings(raw_instances)
            if names is None:
                raise CredentialsRejected("malformed_claim")
            instances = parse_instances(names)

        raw_roles = claim(claims, cfg.roles_claim) if cfg.roles_claim else None
        if raw_roles is None:
            if cfg.default_roles is None:
                raise CredentialsRejected("missing_claim")
            role_names: Iterable[str] = cfg.default_roles
        else:
            listed = _strings(raw_roles)
            if listed is None:
                raise CredentialsRejected("malformed_claim")
            role_names = [cfg.role_map.get(n, n) for n in listed]
        roles, key_purge = parse_roles(role_names, strict=False)
        return Identity(principal, instances=instances, roles=roles, key_purge=key_purge, method="jwt")
