"""The operator CLI against a production-mode daemon: gRPC over mutual TLS, bearer tokens with Key
Protect roles. TLS settings and the token come from flags or the environment; the server's
refusals (an unknown token, a Reader creating a key, no client certificate) come back as one line
with the reason."""

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
CLIENT_CN = "ops-admin"


@dataclass(frozen=True)
class Secured:
    daemon: Daemon
    ca_file: Path
    client_cert: Path
    client_key: Path
    writer_file: Path
    reader: str


def _certificate(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey, *, server: bool
) -> x509.Certificate:
    """The server's certificate is self-signed and also the CA of the client certificate."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=server, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def pki(directory: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """(server cert, key), (client cert, key): the client certificate's CN is CLIENT_CN."""
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _certificate(SERVER_NAME, server_key, server_key, server=True)
    client = _certificate(CLIENT_CN, client_key, server_key, server=False)
    return _write(directory, "server", server, server_key), _write(directory, "client", client, client_key)


@pytest.fixture(scope="module")
def secured(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("ops-tls")
    (cert_file, key_file), (client_cert, client_key) = pki(workdir)
    writer, writer_hash = generate_token()
    reader, reader_hash = generate_token()
    config = workdir / "hsmbridge.toml"
    config.write_text(f"""
[server]
dev = false

[grpc.tls]
cert_file = "{cert_file}"
key_file = "{key_file}"
client_ca_file = "{cert_file}"

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

[[security.mtls.clients]]
subject_cn = "{CLIENT_CN}"
principal = "ops-admin"
instances = ["{INSTANCE}"]
roles = ["Manager"]

[security.audit]
sink = "none"
""")
    writer_file = workdir / "writer.token"
    writer_file.write_text(writer + "\n")
    writer_file.chmod(0o600)
    served = Daemon(softhsm_token, workdir, HSMBRIDGE_CONFIG=str(config))
    served.start()
    try:
        yield Secured(served, cert_file, client_cert, client_key, writer_file, reader)
    finally:
        served.stop()


def test_mutual_tls_and_tokens_from_flags_and_environment(
    run_cli: Hsmbridge, secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HSMBRIDGE_GRPC_ADDRESS", secured.daemon.address)
    monkeypatch.setenv("KP_INSTANCE", INSTANCE)
    tls = ("--ca-file", str(secured.ca_file), "--server-name", SERVER_NAME)
    client = ("--cert-file", str(secured.client_cert), "--key-file", str(secured.client_key))

    # the client certificate alone identifies the caller (principal from [[security.mtls.clients]])
    by_cert = run_cli("keys", "create", "mtls-root", "--alias", "mtls-root", *tls, *client)
    assert by_cert.code == 0, by_cert.err
    assert "ops-admin" in by_cert.out  # created by
    # a bearer token over the same connection speaks for its own principal
    by_token = run_cli("keys", "create", "tls-root", *tls, *client, "--token-file", str(secured.writer_file))
    assert by_token.code == 0, by_token.err
    assert "svc-writer" in by_token.out

    # the same settings from the environment, with the Reader's token
    for name, value in (
        ("HSMBRIDGE_GRPC_CA_FILE", secured.ca_file),
        ("HSMBRIDGE_GRPC_CERT_FILE", secured.client_cert),
        ("HSMBRIDGE_GRPC_KEY_FILE", secured.client_key),
        ("HSMBRIDGE_GRPC_SERVER_NAME", SERVER_NAME),
        ("HSMBRIDGE_TOKEN", secured.reader),
    ):
        monkeypatch.setenv(name, str(value))
    listed = run_cli("keys", "list", "--json")
    assert listed.code == 0, listed.err
    assert sorted(key["name"] for key in listed.json()["keys"]) == ["mtls-root", "tls-root"]  # type: ignore[index]
    forbidden = run_cli("keys", "create", "not-for-readers")
    assert forbidden.code == 1
    assert forbidden.err.startswith("hsmbridge: PERMISSION_DENIED")
    assert secured.reader not in forbidden.err

    monkeypatch.setenv("HSMBRIDGE_TOKEN", "no-such-token")
    unknown = run_cli("keys", "list")
    assert unknown.code == 1
    assert unknown.err.startswith("hsmbridge: UNAUTHENTICATED")
    assert "no-such-token" not in unknown.err


def test_what_the_tls_port_refuses(run_cli: Hsmbridge, secured: Secured) -> None:
    where = ("--address", secured.daemon.address, "--tenant", INSTANCE, "--timeout", "10")
    plaintext = run_cli("keys", "list", *where)
    assert plaintext.code == 1
    assert plaintext.err.startswith("hsmbridge: UNAVAILABLE")
    no_client_cert = run_cli(
        "keys", "list", *where, "--ca-file", str(secured.ca_file), "--server-name", SERVER_NAME
    )
    assert no_client_cert.code == 1
    assert no_client_cert.err.startswith("hsmbridge: UNAVAILABLE")
    wrong_name = run_cli(
        "keys",
        "list",
        *where,
        "--ca-file",
        str(secured.ca_file),
        "--cert-file",
        str(secured.client_cert),
        "--key-file",
        str(secured.client_key),
    )  # the certificate does not name 127.0.0.1
    assert wrong_name.code == 1
    assert wrong_name.err.startswith("hsmbridge: UNAVAILABLE")
    half = run_cli("keys", "list", *where, "--cert-file", str(secured.client_cert))
    assert half.code == 2
    assert "--cert-file and --key-file" in half.err
