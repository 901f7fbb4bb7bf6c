"""The combined Authenticator: bearer parsing, token vs JWT vs certificate precedence, generic
failures, and both transport protocols."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from hsmbridge.core.principal import Principal
from hsmbridge.errors import Unauthenticated
from hsmbridge.grpc.context import Authenticator as GrpcAuthenticator
from hsmbridge.rest.context import RestAuthenticator
from hsmbridge.security.authn import Authenticator, bearer_token
from hsmbridge.security.jwt import CredentialsRejected, JwtConfig, JwtVerifier
from hsmbridge.security.principals import identity_of
from hsmbridge.security.tls import CertificateMapper, MtlsConfig
from hsmbridge.security.tokens import UNAUTHENTICATED_MSG, StaticTokenConfig, StaticTokens, hash_token

TOKEN = "hsmb_authn-test-token-abcdefghijklmnop"
SSL_CONTEXT = {
    "transport_security_type": [b"ssl"],
    "x509_common_name": [b"batch-job"],
    "x509_subject_alternative_name": [b"spiffe://example.test/batch"],
}


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def authn(tmp_path: Path, signing_key: ec.EllipticCurvePrivateKey) -> Authenticator:
    jwks = tmp_path / "jwks.json"
    jwk = ECAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    verifier = JwtVerifier(
        JwtConfig(issuers=["https://idp.test"], audiences=["hsmbridge"], jwks_file=str(jwks))
    )
    tokens = StaticTokens(
        [
            StaticTokenConfig(
                token_sha256=hash_token(TOKEN),
                principal="svc-static",
                instances=["tenant-a"],
                roles=["Manager"],
                key_purge=True,
            )
        ]
    )
    mtls = MtlsConfig.model_validate(
        {"clients": [{"san_uri": "spiffe://example.test/batch", "principal": "svc-batch", "instances": "*"}]}
    )
    return Authenticator(tokens=tokens, jwt=verifier, certificates=CertificateMapper(mtls))


def a_jwt(key: ec.EllipticCurvePrivateKey, **claims: object) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://idp.test",
        "aud": "hsmbridge",
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "instances": ["tenant-b"],
        "roles": ["Reader"],
        **claims,
    }
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": "k1"})


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER  abc  ", "abc"),
    ],
)
def test_bearer_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Token abc", "abc", "Bearer " + "x" * 9000])
def test_other_schemes_and_oversized_tokens_fail(header: str) -> None:
    with pytest.raises(CredentialsRejected):
        bearer_token(header)


def test_static_token_rest(authn: Authenticator) -> None:
    principal = authn.authenticate(f"Bearer {TOKEN}")
    assert isinstance(principal, Principal) and principal.id == "svc-static"
    identity = identity_of(principal)
    assert identity.instances == {"tenant-a"} and identity.roles == {"Manager"} and identity.key_purge


def test_jwt_grpc(authn: Authenticator, signing_key: ec.EllipticCurvePrivateKey) -> None:
    token = a_jwt(signing_key)
    principal = authn.authenticate({"authorization": f"Bearer {token}"}, "ipv4:127.0.0.1:1")
    assert principal.id == "alice"
    assert identity_of(principal).instances == {"tenant-b"}
    assert authn.identify_rest(f"Bearer {token}").method == "jwt"


def test_certificate_when_no_token(authn: Authenticator) -> None:
    principal = authn.authenticate({}, "ipv4:10.0.0.1:5", SSL_CONTEXT)
    assert principal.id == "svc-batch"
    assert identity_of(principal).instances is None


def test_a_bad_token_never_falls_back_to_the_certificate(authn: Authenticator) -> None:
    with pytest.raises(CredentialsRejected) as info:
        authn.authenticate({"authorization": "Bearer hsmb_nope"}, "", SSL_CONTEXT)
    assert info.value.cause == "unknown_token"


@pytest.mark.parametrize(
    ("credentials", "cause"),
    [
        (None, "missing"),
        ("Bearer hsmb_unknown", "unknown_token"),
        ("Bearer a.b.c", "malformed"),
        ("Basic Zm9v", "unsupported_scheme"),
        ({}, "missing"),
        ({"authorization": "Bearer hsmb_unknown"}, "unknown_token"),
    ],
)
def test_failures_are_generic(authn: Authenticator, credentials: object, cause: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        authn.authenticate(credentials, "")  # type: ignore[arg-type]
    assert info.value.message == UNAUTHENTICATED_MSG
    assert isinstance(info.value, CredentialsRejected) and info.value.cause == cause
    assert "hsmb_unknown" not in repr(info.value)


def test_an_expired_jwt_is_rejected(authn: Authenticator, signing_key: ec.EllipticCurvePrivateKey) -> None:
    token = a_jwt(signing_key, exp=int(time.time()) - 3600)
    with pytest.raises(CredentialsRejected) as info:
        authn.authenticate(f"Bearer {token}")
    assert info.value.cause == "expired"


def test_an_unmapped_certificate_without_token_is_rejected(authn: Authenticator) -> None:
    other = {**SSL_CONTEXT, "x509_subject_alternative_name": [b"spiffe://example.test/other"]}
    with pytest.raises(CredentialsRejected):
        authn.authenticate({}, "", other)


def test_nothing_configured_refuses_everything() -> None:
    with pytest.raises(CredentialsRejected):
        Authenticator().authenticate(f"Bearer {TOKEN}")
    with pytest.raises(CredentialsRejected):
        Authenticator().authenticate({}, "", SSL_CONTEXT)


def test_it_satisfies_both_transport_protocols(authn: Authenticator) -> None:
    rest: RestAuthenticator = authn
    grpc_side: GrpcAuthenticator = authn
    assert rest.authenticate(f"Bearer {TOKEN}").id == "svc-static"
    assert grpc_side.authenticate({"authorization": f"Bearer {TOKEN}"}, "ipv4:127.0.0.1:1").id == "svc-static"
