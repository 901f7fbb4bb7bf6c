"""The operator CLI against a production-mode daemon: gRPC over TLS, bearer tokens with Key
Protect roles. TLS settings and the token come from flags or the environment; the server's
refusals (no token, a Reader creating a key) come back as one line with the reason."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from daemon import Daemon

from hsmbridge.security.tokens import generate_token

if TYPE_CHECKING:
    from ops_fixtures import Hsmbridge

pytest_plugins = ("ops_fixtures",)
pytestmark = pytest.mark.softhsm

INSTANCE = "tls-instance"
SERVER_NAME = "hsmbridge.test"  # the only name in the certificate: clients must say --server-name


@dataclass(frozen=True)
class Secured:
    daemon: Daemon
    ca_file: Path
    writer_file: Path
    reader: str


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


@pytest.fixture(scope="module")
def secured(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("ops-tls")
    cert_file, key_file = self_signed(workdir)
    writer, writer_hash = generate_token()
    reader, reader_hash = generate_token()
    config = workdir / "hsmbridge.toml"
    config.write_text(f"""
[server]
dev = false

[grpc.tls]
cert_file = "{cert_file}"
key_file = "{key_file}"

[rest]
enabled = false

[[security.tokens]]
token_sha256 = "{writer_hash}"
principal = "svc-writer"
instances = ["{INSTANCE}"]
roles = ["Writer"]

[[security.tokens]]
token_sha256 = "{reader_hash}"
principal = "svc-reader"
instances = ["{INSTANCE}"]
roles = ["Reader"]

[security.audit]
sink = "none"
""")
    writer_file = workdir / "writer.token"
    writer_file.write_text(writer + "\n")
    writer_file.chmod(0o600)
    served = Daemon(softhsm_token, workdir, HSMBRIDGE_CONFIG=str(config))
    served.start()
    try:
        yield Secured(served, cert_file, writer_file, reader)
    finally:
        served.stop()


def test_tls_and_tokens_from_flags_and_environment(
    run_cli: Hsmbridge, secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HSMBRIDGE_GRPC_ADDRESS", secured.daemon.address)
    monkeypatch.setenv("KP_INSTANCE", INSTANCE)
    tls = ("--ca-file", str(secured.ca_file), "--server-name", SERVER_NAME)

    created = run_cli(
        "keys", "create", "tls-root", "--alias", "tls-root", *tls, "--token-file", str(secured.writer_file)
    )
    assert created.code == 0, created.err
    assert "svc-writer" in created.out  # created by

    # the same settings from the environment, with the Reader's token
    monkeypatch.setenv("HSMBRIDGE_GRPC_CA_FILE", str(secured.ca_file))
    monkeypatch.setenv("HSMBRIDGE_GRPC_SERVER_NAME", SERVER_NAME)
    monkeypatch.setenv("HSMBRIDGE_TOKEN", secured.reader)
    listed = run_cli("keys", "list", "--json")
    assert listed.code == 0, listed.err
    assert [key["name"] for key in listed.json()["keys"]] == ["tls-root"]  # type: ignore[index]
    forbidden = run_cli("keys", "create", "not-for-readers")
    assert forbidden.code == 1
    assert forbidden.err.startswith("hsmbridge: PERMISSION_DENIED")
    assert secured.reader not in forbidden.err

    monkeypatch.delenv("HSMBRIDGE_TOKEN")
    anonymous = run_cli("keys", "list")
    assert anonymous.code == 1
    assert anonymous.err.startswith("hsmbridge: UNAUTHENTICATED")


def test_plaintext_to_a_tls_port_and_half_a_client_certificate(run_cli: Hsmbridge, secured: Secured) -> None:
    plaintext = run_cli(
        "keys", "list", "--address", secured.daemon.address, "--tenant", INSTANCE, "--timeout", "5"
    )
    assert plaintext.code == 1
    assert plaintext.err.startswith("hsmbridge: UNAVAILABLE")
    half = run_cli("keys", "list", "--tenant", INSTANCE, "--cert-file", str(secured.ca_file))
    assert half.code == 2
    assert "--cert-file and --key-file" in half.err
