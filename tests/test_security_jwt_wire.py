"""JWT bearer tokens end to end over REST and gRPC, RS256 and ES256, with the verification keys
in a JWKS file: a valid token works with exactly the roles and instances its claims grant (and
is audited as ``jwt`` under its subject); expired, tampered, wrong-issuer, wrong-audience,
``alg: none``, HS256-signed-with-the-public-key and foreign-key tokens are 401 with Key
Protect's body / UNAUTHENTICATED, audited with their fixed-word cause.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from security_cases import UNAUTHORIZED_BODY
from security_support import INSTANCE_A, INSTANCE_B, Stack, Stubs, error_info, key_body

from hsmbridge.security.authn import Authenticator
from hsmbridge.security.jwt import JwtConfig, JwtVerifier
from hsmbridge.v1 import crypto_pb2, keys_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

ISSUER = "https://idp.test/realms/kms"
AUDIENCE = "hsmbridge"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER = {
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": ec.generate_private_key(ec.SECP256R1()),
}
SIGNERS: dict[str, tuple[Any, str]] = {"RS256": (RSA_KEY, "rsa-1"), "ES256": (EC_KEY, "ec-1")}


@pytest.fixture(scope="module")
def security_authenticator(tmp_path_factory: pytest.TempPathFactory) -> Authenticator:
    jwks = tmp_path_factory.mktemp("idp") / "jwks.json"
    jwks.write_text(
        json.dumps(
            {
                "keys": [
                    {**RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "kid": "rsa-1", "use": "sig"},
                    {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "ec-1", "use": "sig"},
                ]
            }
        )
    )
    config = JwtConfig(issuers=[ISSUER], audiences=[AUDIENCE], jwks_file=str(Path(jwks)))
    return Authenticator(jwt=JwtVerifier(config))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-from-idp",
        "iat": now,
        "exp": now + 600,
        "instances": [INSTANCE_A],
        "roles": ["Writer"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(alg: str, **overrides: Any) -> str:
    key, kid = SIGNERS[alg]
    return pyjwt.encode(claims(**overrides), key, algorithm=alg, headers={"kid": kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _tampered(alg: str) -> str:
    header, _, signature = sign(alg).split(".")
    payload = b64url(json.dumps(claims(roles=["Manager"], sub="someone-else")).encode())
    return f"{header}.{payload}.{signature}"


def _alg_none(alg: str) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": SIGNERS[alg][1]}).encode())
    return f"{header}.{b64url(json.dumps(claims()).encode())}."


def _hs256_with_public_key(alg: str) -> str:
    """The key-confusion attack: HMAC keyed with the verifier's own public key (PEM)."""
    public = (
        SIGNERS[alg][0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = ".".join(
        (
            b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": SIGNERS[alg][1]}).encode()),
            b64url(json.dumps(claims()).encode()),
        )
    )
    return f"{signing_input}.{b64url(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())}"


def _foreign_key(alg: str) -> str:
    return pyjwt.encode(claims(), STRANGER[alg], algorithm=alg, headers={"kid": SIGNERS[alg][1]})


#: name → (token maker, the audit cause it must be rejected with)
BAD_TOKENS: dict[str, tuple[Callable[[str], str], str]] = {
    "expired": (lambda alg: sign(alg, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600), "expired"),
    "tampered": (_tampered, "bad_signature"),
    "wrong-issuer": (lambda alg: sign(alg, iss="https://evil.test/realms/kms"), "wrong_issuer"),
    "wrong-audience": (lambda alg: sign(alg, aud="another-service"), "wrong_audience"),
    "alg-none": (_alg_none, "algorithm_not_allowed"),
    "hs256-with-public-key": (_hs256_with_public_key, "algorithm_not_allowed"),
    "foreign-key-same-kid": (_foreign_key, "bad_signature"),
}


def rest_headers(token: str, instance: str = INSTANCE_A) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "bluemix-instance": instance}


def grpc_metadata(token: str, instance: str = INSTANCE_A) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"), ("bluemix-instance", instance))


@pytest.mark.parametrize("alg", SIGNERS)
def test_a_valid_jwt_works_on_both_transports_with_its_claims(
    rest: TestClient, stubs: Stubs, stack: Stack, alg: str
) -> None:
    token = sign(alg)
    stack.take_events()
    created = rest.post("/api/v2/keys", json=key_body(f"jwt-{alg}"), headers=rest_headers(token))
    assert created.status_code == 201, created.text
    key_id = created.json()["resources"][0]["id"]
    assert created.json()["resources"][0]["createdBy"] == "user-from-idp"
    assert (
        rest.post(f"/api/v2/keys/{key_id}/actions/wrap", json={}, headers=rest_headers(token)).status_code
        == 200
    )
    key = stubs.keys.CreateKey(keys_pb2.CreateKeyRequest(name=f"jwt-{alg}"), metadata=grpc_metadata(token))
    assert key.created_by == "user-from-idp"
    stubs.crypto.Wrap(crypto_pb2.WrapRequest(key_id=key.id), metadata=grpc_metadata(token))
    events = stack.take_events()
    assert [(e["principal"], e["auth_method"], e["outcome"]) for e in events] == [
        ("user-from-idp", "jwt", "success")
    ] * 4


@pytest.mark.parametrize("alg", SIGNERS)
def test_the_claims_decide_roles_and_instances(
    rest: TestClient, stubs: Stubs, stack: Stack, alg: str
) -> None:
    reader = sign(alg, roles=["Reader", "some-idp-group"])
    key = stack.new_key(name="for-readers")
    # a Reader may wrap but not create or disable
    assert (
        rest.post(f"/api/v2/keys/{key.id}/actions/wrap", json={}, headers=rest_headers(reader)).status_code
        == 200
    )
    denied = rest.post("/api/v2/keys", json=key_body("nope"), headers=rest_headers(reader))
    assert (denied.status_code, denied.json()) == (401, UNAUTHORIZED_BODY)
    with pytest.raises(grpc.RpcError) as info:
        stubs.keys.SetKeyState(
            keys_pb2.SetKeyStateRequest(key_id=key.id, state=keys_pb2.KEY_STATE_SUSPENDED),
            metadata=grpc_metadata(reader),
        )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # a Writer of A only is no one in B
    writer = sign(alg)
    assert rest.get("/api/v2/keys", headers=rest_headers(writer, INSTANCE_B)).status_code == 401
    with pytest.raises(grpc.RpcError) as elsewhere:
        stubs.keys.ListKeys(keys_pb2.ListKeysRequest(), metadata=grpc_metadata(writer, INSTANCE_B))
    assert elsewhere.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # KeyPurge comes from the roles claim too, and Manager alone does not carry it
    manager = sign(alg, roles=["Manager"], instances=[INSTANCE_A, INSTANCE_B])
    assert rest.get("/api/v2/keys", headers=rest_headers(manager, INSTANCE_B)).status_code == 200
    assert rest.delete(f"/api/v2/keys/{key.id}/purge", headers=rest_headers(manager)).status_code == 401
    purger = sign(alg, roles=["Manager", "KeyPurge"])
    assert rest.delete(f"/api/v2/keys/{key.id}/purge", headers=rest_headers(purger)).status_code != 401


@pytest.mark.parametrize("bad", BAD_TOKENS)
@pytest.mark.parametrize("alg", SIGNERS)
def test_bad_jwts_are_rejected_on_both_transports(
    rest: TestClient, stubs: Stubs, stack: Stack, alg: str, bad: str
) -> None:
    make, cause = BAD_TOKENS[bad]
    token = make(alg)
    key = stack.new_key(name="jwt-target")
    stack.take_events()
    response = rest.post(f"/api/v2/keys/{key.id}/actions/wrap", json={}, headers=rest_headers(token))
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)
    with pytest.raises(grpc.RpcError) as info:
        stubs.crypto.Wrap(crypto_pb2.WrapRequest(key_id=key.id), metadata=grpc_metadata(token))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error_info(info.value).reason == "UNAUTHENTICATED"
    assert token not in (info.value.details() or "") and token not in response.text
    events = stack.take_events()
    assert [(e["reason"], e["cause"], e["principal"], e["transport"]) for e in events] == [
        ("UNAUTHENTICATED", cause, None, "rest"),
        ("UNAUTHENTICATED", cause, None, "grpc"),
    ]
