"""JWT verification: every way a token can be wrong is rejected, for RS256 and ES256, whether the
keys come from a JWKS file or from PEM files; claims map to an Identity as configured."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from hsmbridge.errors import Unauthenticated
from hsmbridge.security.jwt import (
    UNAUTHENTICATED_MSG,
    CredentialsRejected,
    JwtConfig,
    JwtVerifier,
    load_pem_key,
    parse_jwks,
)

ISSUER = "https://idp.example.test/realms/kms"
AUDIENCE = "hsmbridge"


@dataclass(frozen=True)
class Signer:
    alg: str
    kid: str
    private: Any

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        algo = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        data: dict[str, Any] = algo.to_jwk(self.public, as_dict=True)
        data.update(kid=self.kid, use="sig", alg=self.alg)
        return data

    def pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        head = {"kid": self.kid, **(headers or {})}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=head)


@pytest.fixture(scope="module")
def rsa_signer() -> Signer:
    return Signer("RS256", "rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_signer() -> Signer:
    return Signer("ES256", "ec-1", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def stranger() -> Signer:
    """Same kid as the real RSA key, different key: a forger who knows the kid."""
    return Signer("RS256", "rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 600,
        "instances": ["tenant-a"],
        "roles": ["Writer"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def config(**overrides: Any) -> JwtConfig:
    data: dict[str, Any] = {"issuers": [ISSUER], "audiences": [AUDIENCE], "leeway_seconds": 30}
    data.update(overrides)
    return JwtConfig.model_validate(data)


@pytest.fixture(params=["jwks", "pem"])
def source(
    request: pytest.FixtureRequest, tmp_path: Path, rsa_signer: Signer, ec_signer: Signer
) -> JwtConfig:
    """Both key sources, each holding the RSA and the EC key."""
    if request.param == "jwks":
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps({"keys": [rsa_signer.jwk(), ec_signer.jwk()]}))
        return config(jwks_file=str(path))
    pems = []
    for s in (rsa_signer, ec_signer):
        p = tmp_path / f"{s.kid}.pem"
        p.write_bytes(s.pem())
        pems.append({"path": str(p), "kid": s.kid})
    return config(pem_keys=pems)


@pytest.fixture(params=["RS256", "ES256"])
def signer(request: pytest.FixtureRequest, rsa_signer: Signer, ec_signer: Signer) -> Signer:
    return rsa_signer if request.param == "RS256" else ec_signer


def rejected(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(CredentialsRejected) as info:
        verifier.verify(token)
    assert isinstance(info.value, Unauthenticated)
    assert info.value.message == UNAUTHENTICATED_MSG
    if token:
        assert token not in str(info.value) and token not in repr(info.value)
    assert not info.value.metadata
    return info.value.cause


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(signature)}"


# The good path.


def test_a_valid_token_maps_to_its_identity(source: JwtConfig, signer: Signer) -> None:
    identity = JwtVerifier(source).verify(signer.sign(claims()))
    assert identity.principal_id == "user-123"
    assert identity.instances == {"tenant-a"}
    assert identity.roles == {"Writer"}
    assert not identity.key_purge
    assert identity.method == "jwt"


def test_skew_within_the_leeway_is_tolerated(source: JwtConfig, signer: Signer) -> None:
    now = int(time.time())
    token = signer.sign(claims(exp=now - 10, nbf=now + 10, iat=now + 10))
    assert JwtVerifier(source).verify(token).principal_id == "user-123"


# Every way to be wrong, for both algorithms and both key sources.


def test_expired(source: JwtConfig, signer: Signer) -> None:
    token = signer.sign(claims(exp=int(time.time()) - 120))
    assert rejected(JwtVerifier(source), token) == "expired"


def test_expired_beyond_a_zero_leeway(source: JwtConfig, signer: Signer) -> None:
    strict = source.model_copy(update={"leeway_seconds": 0})
    token = signer.sign(claims(exp=int(time.time()) - 5))
    assert rejected(JwtVerifier(strict), token) == "expired"


def test_not_yet_valid(source: JwtConfig, signer: Signer) -> None:
    token = signer.sign(claims(nbf=int(time.time()) + 300))
    assert rejected(JwtVerifier(source), token) == "not_yet_valid"


def test_issued_in_the_future(source: JwtConfig, signer: Signer) -> None:
    token = signer.sign(claims(iat=int(time.time()) + 300, nbf=None))
    assert rejected(JwtVerifier(source), token) == "not_yet_valid"


def test_tampered_payload(source: JwtConfig, signer: Signer) -> None:
    head, _, sig = signer.sign(claims()).split(".")
    evil = b64(json.dumps(claims(roles=["Manager"], instances="*")).encode())
    assert rejected(JwtVerifier(source), f"{head}.{evil}.{sig}") == "bad_signature"


def test_tampered_signature(source: JwtConfig, signer: Signer) -> None:
    head, body, sig = signer.sign(claims()).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    assert rejected(JwtVerifier(source), f"{head}.{body}.{b64(bytes(raw))}") in {"bad_signature", "malformed"}


def test_signed_by_another_key_with_a_known_kid(source: JwtConfig, stranger: Signer) -> None:
    assert rejected(JwtVerifier(source), stranger.sign(claims())) == "bad_signature"


def test_wrong_issuer(source: JwtConfig, signer: Signer) -> None:
    token = signer.sign(claims(iss="https://evil.example.test"))
    assert rejected(JwtVerifier(source), token) == "wrong_issuer"


def test_wrong_audience(source: JwtConfig, signer: Signer) -> None:
    token = signer.sign(claims(aud="another-service"))
    assert rejected(JwtVerifier(source), token) == "wrong_audience"


def test_alg_none(source: JwtConfig, signer: Signer) -> None:
    for alg in ("none", "None", "NONE"):
        token = forge({"alg": alg, "typ": "JWT", "kid": signer.kid}, claims())
        assert rejected(JwtVerifier(source), token) == "algorithm_not_allowed"
    # and the same with a trailing dot only, the other common spelling of an unsigned JWS
    token = forge({"alg": "none", "kid": signer.kid}, claims()).rsplit(".", 1)[0] + "."
    assert rejected(JwtVerifier(source), token) == "algorithm_not_allowed"


def test_hs256_with_the_public_key_as_secret(source: JwtConfig, signer: Signer) -> None:
    """The key-confusion attack: sign HS256 with the verifier's public key (PEM or JWK JSON)."""
    for secret in (signer.pem(), json.dumps(signer.jwk()).encode()):
        header = {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
        head = b64(json.dumps(header).encode())
        body = b64(json.dumps(claims(roles=["Manager"])).encode())
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        assert rejected(JwtVerifier(source), f"{head}.{body}.{b64(mac)}") == "algorithm_not_allowed"


@pytest.mark.parametrize("alg", ["RS512", "PS256", "ES384", "HS512", "EdDSA"])
def test_algorithms_outside_the_allow_list(source: JwtConfig, signer: Signer, alg: str) -> None:
    token = forge({"alg": alg, "kid": signer.kid}, claims(), b"\x00" * 64)
    assert rejected(JwtVerifier(source), token) == "algorithm_not_allowed"


def test_an_algorithm_the_config_disallows(source: JwtConfig, ec_signer: Signer) -> None:
    rs_only = source.model_copy(update={"algorithms": ["RS256"]})
    pems = source.pem_keys
    if pems:  # a PEM source holds the EC key too; drop it as an operator would
        rs_only = rs_only.model_copy(update={"pem_keys": [k for k in pems if k.kid != ec_signer.kid]})
    assert rejected(JwtVerifier(rs_only), ec_signer.sign(claims())) == "algorithm_not_allowed"


def test_unknown_kid(source: JwtConfig, signer: Signer) -> None:
    token = jwt.encode(claims(), signer.private, algorithm=signer.alg, headers={"kid": "rotated-away"})
    assert rejected(JwtVerifier(source), token) == "unknown_kid"


def test_a_kid_naming_a_key_of_the_other_algorithm(
    source: JwtConfig, rsa_signer: Signer, ec_signer: Signer
) -> None:
    token = jwt.encode(claims(), ec_signer.private, algorithm="ES256", headers={"kid": rsa_signer.kid})
    assert rejected(JwtVerifier(source), token) == "unknown_kid"


def test_a_token_without_kid_is_tried_against_the_keys_of_its_algorithm(
    source: JwtConfig, signer: Signer
) -> None:
    token = jwt.encode(claims(), signer.private, algorithm=signer.alg)
    assert JwtVerifier(source).verify(token).principal_id == "user-123"


def test_critical_headers_are_rejected(source: JwtConfig, signer: Signer) -> None:
    """PyJWT itself refuses unknown critical extensions when parsing; we refuse any `crit`."""
    token = signer.sign(claims(), headers={"crit": ["exp"], "exp": 1})
    assert rejected(JwtVerifier(source), token) in {"unsupported_critical_header", "malformed"}


@pytest.mark.parametrize("missing", ["exp", "iat", "iss", "aud"])
def test_missing_registered_claims(source: JwtConfig, signer: Signer, missing: str) -> None:
    token = signer.sign(claims(**{missing: None}))
    assert rejected(JwtVerifier(source), token) == "missing_claim"


@pytest.mark.parametrize("missing", ["sub", "instances", "roles"])
def test_missing_mapping_claims(source: JwtConfig, signer: Signer, missing: str) -> None:
    token = signer.sign(claims(**{missing: None}))
    assert rejected(JwtVerifier(source), token) == "missing_claim"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "not.a.jwt", "x" * 20000, "eyJhbGciOiJSUzI1NiJ9..", "..."],
)
def test_garbage(source: JwtConfig, token: str) -> None:
    rejected(JwtVerifier(source), token)


@pytest.mark.parametrize("value", [42, {"a": 1}, [1, 2], True])
def test_claims_of_the_wrong_type(source: JwtConfig, signer: Signer, value: Any) -> None:
    assert rejected(JwtVerifier(source), signer.sign(claims(roles=value))) == "malformed_claim"
    assert rejected(JwtVerifier(source), signer.sign(claims(instances=value))) == "malformed_claim"


# Claim mapping.


def verifier_for(signer: Signer, tmp_path: Path, **overrides: Any) -> JwtVerifier:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [signer.jwk()]}))
    return JwtVerifier(config(jwks_file=str(path), **overrides))


def test_ibm_iam_like_tokens_use_iam_id_before_sub(rsa_signer: Signer, tmp_path: Path) -> None:
    v = verifier_for(rsa_signer, tmp_path)
    token = rsa_signer.sign(claims(iam_id="IBMid-0000000000", sub="someone@example.com"))
    assert v.verify(token).principal_id == "IBMid-0000000000"


def test_nested_claims_strings_role_map_and_crn_roles(rsa_signer: Signer, tmp_path: Path) -> None:
    v = verifier_for(
        rsa_signer,
        tmp_path,
        instances_claim="kms.instances",
        roles_claim="realm_access.roles",
        role_map={"kms-admins": "Manager"},
    )
    token = rsa_signer.sign(
        claims(
            instances=None,
            roles=None,
            kms={"instances": "tenant-a, tenant-b"},
            realm_access={
                "roles": [
                    "offline_access",
                    "kms-admins",
                    "crn:v1:bluemix:public:iam::::serviceRole:Reader",
                    "KeyPurge",
                ]
            },
        )
    )
    identity = v.verify(token)
    assert identity.instances == {"tenant-a", "tenant-b"}
    assert identity.roles == {"Manager", "Reader"}
    assert identity.key_purge


def test_defaults_stand_in_for_absent_claims(rsa_signer: Signer, tmp_path: Path) -> None:
    v = verifier_for(rsa_signer, tmp_path, default_instances="*", default_roles=["Reader"])
    identity = v.verify(rsa_signer.sign(claims(instances=None, roles=None)))
    assert identity.instances is None and identity.roles == {"Reader"}


def test_a_star_instance_claim_means_any(rsa_signer: Signer, tmp_path: Path) -> None:
    v = verifier_for(rsa_signer, tmp_path)
    assert v.verify(rsa_signer.sign(claims(instances=["*"]))).instances is None


def test_foreign_roles_grant_nothing(rsa_signer: Signer, tmp_path: Path) -> None:
    v = verifier_for(rsa_signer, tmp_path)
    identity = v.verify(rsa_signer.sign(claims(roles=["admin", "owner", "instance:*"])))
    assert identity.roles == frozenset() and not identity.key_purge


def test_max_age_uses_the_injected_clock(rsa_signer: Signer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_signer.jwk()]}))
    now = int(time.time())
    cfg = config(jwks_file=str(path), max_age_seconds=3600, leeway_seconds=0)
    token = rsa_signer.sign(claims(iat=now - 10, exp=now + 86400))
    assert JwtVerifier(cfg, clock=lambda: now).verify(token)
    assert rejected(JwtVerifier(cfg, clock=lambda: now + 3600), token) == "too_old"


# Key loading.


def test_jwks_skips_foreign_keys_and_keeps_usable_ones(rsa_signer: Signer, ec_signer: Signer) -> None:
    enc = {**rsa_signer.jwk(), "use": "enc", "kid": "enc"}
    ps = {**rsa_signer.jwk(), "alg": "PS256", "kid": "ps"}
    p384 = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
    weak = RSAAlgorithm.to_jwk(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(), as_dict=True
    )
    keys = parse_jwks(
        {"keys": [enc, ps, p384, {**weak, "kid": "weak"}, "junk", rsa_signer.jwk(), ec_signer.jwk()]}
    )
    assert [(k.kid, k.alg) for k in keys] == [("rsa-1", "RS256"), ("ec-1", "ES256")]


@pytest.mark.parametrize(
    "member",
    [{"kty": "oct", "k": "c2VjcmV0"}, {"d": "AQAB"}],
)
def test_jwks_with_private_or_symmetric_material_is_refused(
    rsa_signer: Signer, member: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="private or symmetric"):
        parse_jwks({"keys": [{**rsa_signer.jwk(), **member}]})


def test_pem_private_keys_and_unsupported_curves_are_refused(tmp_path: Path, ec_signer: Signer) -> None:
    private = tmp_path / "private.pem"
    private.write_bytes(
        ec_signer.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="private key"):
        load_pem_key(private)
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="P-256"):
        load_pem_key(p384)


def test_config_requires_an_audience_and_keys() -> None:
    with pytest.raises(ValidationError):
        JwtConfig.model_validate({"jwks_file": "x"})
    with pytest.raises(ValidationError):
        JwtConfig.model_validate({"audiences": ["a"]})
    with pytest.raises(ValidationError):
        JwtConfig.model_validate({"audiences": ["a"], "jwks_file": "x", "algorithms": ["HS256"]})
    with pytest.raises(ValidationError):
        JwtConfig.model_validate({"audiences": ["a"], "jwks_file": "x", "role_map": {"g": "Owner"}})


def test_ibm_defaults() -> None:
    cfg = JwtConfig.model_validate({"audiences": ["a"], "jwks_file": "x"})
    assert cfg.issuers == ["https://iam.cloud.ibm.com/identity"]
    assert cfg.principal_claims == ["iam_id", "sub"]
    assert set(cfg.algorithms) == {"RS256", "ES256"}


def test_reload_picks_up_rotated_keys(tmp_path: Path, rsa_signer: Signer, ec_signer: Signer) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_signer.jwk()]}))
    v = JwtVerifier(config(jwks_file=str(path)))
    token = ec_signer.sign(claims())
    assert rejected(v, token) == "unknown_kid"
    path.write_text(json.dumps({"keys": [rsa_signer.jwk(), ec_signer.jwk()]}))
    v.reload()
    assert v.verify(token).principal_id == "user-123"
