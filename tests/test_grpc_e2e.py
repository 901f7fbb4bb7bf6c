"""The done-when flow of the foundation, through a real daemon on a random port, with a client
generated from protos/: import tokens, secure import (OAEP SHA-1 and SHA-256), root keys, wrap
with and without plaintext and AAD, unwrap, rotate, old ciphertext unwrapped and rewrapped — and
all of it still works after the daemon restarts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from daemon import Daemon
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from hsmbridge.v1 import (
    crypto_pb2,
    crypto_pb2_grpc,
    hsm_pb2,
    hsm_pb2_grpc,
    import_tokens_pb2,
    import_tokens_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
)

pytestmark = pytest.mark.softhsm
TENANT = (("x-hsmbridge-tenant", "e2e-tenant"),)


@pytest.fixture(scope="module")
def daemon(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """A daemon for the module; `hsm_backend` has created the master KEK (serve never does)."""
    d = Daemon(softhsm_token, tmp_path_factory.mktemp("daemon"))
    d.start()
    yield d
    if d.proc and d.proc.poll() is None:
        d.stop()


class Client:
    def __init__(self, channel: grpc.Channel) -> None:
        self.keys = keys_pb2_grpc.KeyServiceStub(channel)
        self.crypto = crypto_pb2_grpc.CryptoServiceStub(channel)
        self.tokens = import_tokens_pb2_grpc.ImportTokenServiceStub(channel)
        self.hsm = hsm_pb2_grpc.HsmServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


def client(d: Daemon) -> Client:
    return Client(d.channel())


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def secure_material(
    token: import_tokens_pb2.ImportToken, material: bytes, hash_: str
) -> keys_pb2.KeyMaterial:
    public = serialization.load_pem_public_key(token.public_key_pem.encode())
    algorithm = hashes.SHA1() if hash_ == "sha1" else hashes.SHA256()
    iv = os.urandom(12)
    return keys_pb2.KeyMaterial(
        secure=keys_pb2.SecureMaterial(
            encrypted_key=public.encrypt(
                material, padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
            ),
            iv=iv,
            encrypted_nonce=AESGCM(material).encrypt(iv, token.nonce, None),
            oaep_hash=keys_pb2.OAEP_HASH_SHA1 if hash_ == "sha1" else keys_pb2.OAEP_HASH_SHA256,
        )
    )


def test_health_reflection_and_hsm_info(daemon: Daemon) -> None:
    c = client(daemon)
    assert c.health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(daemon.channel())
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"hsmbridge.v1.KeyService", "hsmbridge.v1.CryptoService", "grpc.health.v1.Health"} <= names
    info = c.hsm.GetHsmInfo(hsm_pb2.GetHsmInfoRequest(), metadata=TENANT)
    assert info.manufacturer == "SoftHSM" and info.capabilities.aes_gcm and info.capabilities.rsa_oaep_sha1


def test_errors_carry_a_status_code_and_an_error_info_reason(daemon: Daemon) -> None:
    c = client(daemon)
    with pytest.raises(grpc.RpcError) as missing:
        c.keys.GetKey(keys_pb2.GetKeyRequest(key_id="00000000-0000-4000-8000-000000000000"), metadata=TENANT)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert error_info(missing.value).reason == "KEY_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as no_tenant:
        c.keys.GetKey(keys_pb2.GetKeyRequest(key_id="x"))
    assert no_tenant.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    key = c.keys.CreateKey(keys_pb2.CreateKeyRequest(name="root-for-errors"), metadata=TENANT)
    with pytest.raises(grpc.RpcError) as bad:
        c.crypto.Unwrap(crypto_pb2.UnwrapRequest(key_id=key.id, ciphertext=b"\x01" * 60), metadata=TENANT)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(bad.value).reason == "INTEGRITY_CHECK_FAILED"


def test_the_whole_flow_survives_a_restart(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path: Path
) -> None:
    d = Daemon(softhsm_token, tmp_path)
    d.start()
    c = client(d)
    md = (("x-hsmbridge-tenant", "restart-tenant"),)

    # Secure import, both OAEP hashes.
    imported = {}
    for hash_ in ("sha1", "sha256"):
        c.tokens.CreateImportToken(
            import_tokens_pb2.CreateImportTokenRequest(key_bits=2048, max_retrievals=2), metadata=md
        )
        token = c.tokens.GetImportToken(import_tokens_pb2.GetImportTokenRequest(), metadata=md)
        assert token.remaining_retrievals == 1 and len(token.nonce) == 12
        material = os.urandom(32)
        key = c.keys.ImportKey(
            keys_pb2.ImportKeyRequest(
                key=keys_pb2.CreateKeyRequest(name=f"imported-{hash_}"),
                material=secure_material(token, material, hash_),
            ),
            metadata=md,
        )
        assert key.imported and not key.extractable and key.bit_length == 256
        imported[hash_] = (key.id, material)

    # A generated root key: wrap with a given plaintext and AAD, and with a generated DEK.
    root = c.keys.CreateKey(keys_pb2.CreateKeyRequest(name="root", aliases=["payments-root"]), metadata=md)
    aad = ["tenant-db", "row=42"]
    given = c.crypto.Wrap(crypto_pb2.WrapRequest(key_id=root.id, plaintext=b"k" * 32, aad=aad), metadata=md)
    assert not given.plaintext and given.key_version_id == root.id
    generated = c.crypto.Wrap(crypto_pb2.WrapRequest(key_id="payments-root"), metadata=md)
    assert len(generated.plaintext) == 32
    assert (
        c.crypto.Unwrap(
            crypto_pb2.UnwrapRequest(key_id=root.id, ciphertext=given.ciphertext, aad=aad), metadata=md
        ).plaintext
        == b"k" * 32
    )

    # The imported keys hold exactly the imported material: software AES-GCM agrees.
    for key_id, _material in imported.values():
        w = c.crypto.Wrap(crypto_pb2.WrapRequest(key_id=key_id, plaintext=b"dek"), metadata=md)
        assert (
            c.crypto.Unwrap(
                crypto_pb2.UnwrapRequest(key_id=key_id, ciphertext=w.ciphertext), metadata=md
            ).plaintext
            == b"dek"
        )

    # Rotate; the old ciphertext still opens and comes back rewrapped under the new version.
    rotated = c.keys.RotateKey(keys_pb2.RotateKeyRequest(key_id=root.id), metadata=md)
    assert rotated.current_version.id != root.id
    old = c.crypto.Unwrap(
        crypto_pb2.UnwrapRequest(key_id=root.id, ciphertext=given.ciphertext, aad=aad), metadata=md
    )
    assert old.plaintext == b"k" * 32 and old.key_version_id == root.id
    assert old.rewrapped_key_version_id == rotated.current_version.id and old.rewrapped_ciphertext
    rewrap = c.crypto.Rewrap(
        crypto_pb2.RewrapRequest(key_id=root.id, ciphertext=given.ciphertext, aad=aad), metadata=md
    )
    assert rewrap.key_version_id == root.id and rewrap.rewrapped_key_version_id == rotated.current_version.id

    assert d.stop() == 0
    d.start()
    c = client(d)
    for ciphertext in (given.ciphertext, old.rewrapped_ciphertext, rewrap.ciphertext):
        again = c.crypto.Unwrap(
            crypto_pb2.UnwrapRequest(key_id=root.id, ciphertext=ciphertext, aad=aad), metadata=md
        )
        assert again.plaintext == b"k" * 32
    assert (
        c.crypto.Unwrap(
            crypto_pb2.UnwrapRequest(key_id=root.id, ciphertext=generated.ciphertext), metadata=md
        ).plaintext
        == generated.plaintext
    )
    versions = c.keys.ListKeyVersions(keys_pb2.ListKeyVersionsRequest(key_id="payments-root"), metadata=md)
    assert [v.id for v in versions.versions] == [rotated.current_version.id, root.id]
    # The import token's private key is an HSM token object: it survived the restart too.
    token = c.tokens.GetImportToken(import_tokens_pb2.GetImportTokenRequest(), metadata=md)
    material = os.urandom(16)
    key = c.keys.ImportKey(
        keys_pb2.ImportKeyRequest(
            key=keys_pb2.CreateKeyRequest(name="after-restart"),
            material=secure_material(token, material, "sha256"),
        ),
        metadata=md,
    )
    assert key.bit_length == 128
    # Another tenant sees none of it.
    with pytest.raises(grpc.RpcError) as other:
        c.crypto.Unwrap(
            crypto_pb2.UnwrapRequest(key_id=root.id, ciphertext=given.ciphertext, aad=aad),
            metadata=(("x-hsmbridge-tenant", "someone-else"),),
        )
    assert other.value.code() is grpc.StatusCode.NOT_FOUND
    assert d.stop() == 0
