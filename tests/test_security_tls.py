"""Transport security against a real grpc.aio server on 127.0.0.1: TLS, mutual TLS with a known
client certificate mapped to its principal, unknown certificates and plaintext refused; the
certificate helpers; unix-socket permissions."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pydantic import ValidationError

from hsmbridge.errors import InvalidInput
from hsmbridge.security.authn import Authenticator
from hsmbridge.security.jwt import CredentialsRejected
from hsmbridge.security.tls import (
    CertificateMapper,
    MtlsConfig,
    PeerCertificate,
    TlsConfig,
    grpc_server_credentials,
    peer_certificate,
    prepare_unix_socket,
    secure_unix_socket,
    uvicorn_ssl_kwargs,
)
from hsmbridge.security.tokens import StaticTokenConfig, StaticTokens, hash_token

TOKEN = "hsmb_tls-test-token-0123456789abcdef"
WHOAMI = "/hsmbridge.test.Identity/WhoAmI"


# A throw-away PKI.


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Party:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def credentials(self, root: bytes) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=_key_pem(self.key), certificate_chain=_pem(self.cert)
        )


@dataclass
class Pki:
    dir: Path
    ca_pem: bytes
    server: TlsConfig
    mutual: TlsConfig
    known: Party
    unmapped: Party
    rogue: Party


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("hsmbridge test client CA", ca_key, None, ca_key, ca=True)
    server_key = _key()
    server = _cert(
        "hsmbridge",
        server_key,
        ca,
        ca_key,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    known_key, unmapped_key = _key(), _key()
    known = _cert(
        "payments-client",
        known_key,
        ca,
        ca_key,
        san=[x509.UniformResourceIdentifier("spiffe://example.test/payments")],
    )
    unmapped = _cert("intruder", unmapped_key, ca, ca_key)
    # Another CA issuing a certificate with the *same* subject: only the chain tells them apart.
    rogue_ca_key = _key()
    rogue_ca = _cert("hsmbridge test client CA", rogue_ca_key, None, rogue_ca_key, ca=True)
    rogue_key = _key()
    rogue = _cert(
        "payments-client",
        rogue_key,
        rogue_ca,
        rogue_ca_key,
        san=[x509.UniformResourceIdentifier("spiffe://example.test/payments")],
    )
    (d / "ca.pem").write_bytes(_pem(ca))
    (d / "server.pem").write_bytes(_pem(server))
    (d / "server.key").write_bytes(_key_pem(server_key))
    tls = TlsConfig(cert_file=str(d / "server.pem"), key_file=str(d / "server.key"))
    return Pki(
        dir=d,
        ca_pem=_pem(ca),
        server=tls,
        mutual=tls.model_copy(update={"client_ca_file": str(d / "ca.pem")}),
        known=Party(known, known_key),
        unmapped=Party(unmapped, unmapped_key),
        rogue=Party(rogue, rogue_key),
    )


def authenticator() -> Authenticator:
    mtls = MtlsConfig.model_validate(
        {
            "clients": [
                {
                    "subject_cn": "payments-client",
                    "san_uri": "spiffe://example.test/payments",
                    "principal": "svc-payments",
                    "instances": ["tenant-a"],
                    "roles": ["Writer"],
                }
            ]
        }
    )
    tokens = StaticTokens(
        [
            StaticTokenConfig(
                token_sha256=hash_token(TOKEN), principal="token-user", instances="*", roles=["Reader"]
            )
        ]
    )
    return Authenticator(tokens=tokens, certificates=CertificateMapper(mtls))


# A tiny real server: standard health checking plus one RPC that answers the caller's principal.

Scenario = Callable[[str], Awaitable[None]]


def run_server(credentials: grpc.ServerCredentials | None, scenario: Scenario, address: str = "") -> None:
    authn = authenticator()

    async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            identity = authn.identify_context(context)
        except CredentialsRejected as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        return f"{identity.principal_id}/{identity.method}".encode()

    async def main() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "hsmbridge.test.Identity", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)}
                ),
            )
        )
        if address.startswith("unix:"):
            assert server.add_insecure_port(address)
            target = address
        elif credentials is None:
            target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        else:
            target = f"127.0.0.1:{server.add_secure_port('127.0.0.1:0', credentials)}"
        await server.start()
        try:
            await scenario(target)
        finally:
            await server.stop(None)

    asyncio.run(main())


async def check_health(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def whoami(channel: grpc.aio.Channel, token: str | None = None) -> str:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    reply = await channel.unary_unary(WHOAMI)(b"", metadata=metadata, timeout=10)
    return bytes(reply).decode()


async def refused(channel: grpc.aio.Channel, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await check_health(channel)
    assert info.value.code() == code


def test_tls_works_and_plaintext_clients_are_refused(pki: Pki) -> None:
    async def scenario(target: str) -> None:
        async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(pki.ca_pem)) as ch:
            await check_health(ch)
            assert await whoami(ch, TOKEN) == "token-user/token"
        async with grpc.aio.insecure_channel(target) as ch:
            await refused(ch)

    run_server(grpc_server_credentials(pki.server), scenario)


def test_mtls_with_a_known_client_certificate_maps_to_its_principal(pki: Pki) -> None:
    async def scenario(target: str) -> None:
        async with grpc.aio.secure_channel(target, pki.known.credentials(pki.ca_pem)) as ch:
            await check_health(ch)
            assert await whoami(ch) == "svc-payments/mtls"
            # a bearer token, when sent, decides over the certificate
            assert await whoami(ch, TOKEN) == "token-user/token"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await whoami(ch, "hsmb_wrong-token")
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "hsmb_wrong-token" not in (info.value.details() or "")

    run_server(grpc_server_credentials(pki.mutual), scenario)


def test_mtls_rejects_a_certificate_from_another_ca_even_with_the_same_subject(pki: Pki) -> None:
    async def scenario(target: str) -> None:
        async with grpc.aio.secure_channel(target, pki.rogue.credentials(pki.ca_pem)) as ch:
            await refused(ch)

    run_server(grpc_server_credentials(pki.mutual), scenario)


def test_mtls_rejects_clients_without_a_certificate_and_plaintext(pki: Pki) -> None:
    async def scenario(target: str) -> None:
        async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(pki.ca_pem)) as ch:
            await refused(ch)
        async with grpc.aio.insecure_channel(target) as ch:
            await refused(ch)

    run_server(grpc_server_credentials(pki.mutual), scenario)


def test_a_trusted_but_unmapped_certificate_still_needs_a_token(pki: Pki) -> None:
    async def scenario(target: str) -> None:
        async with grpc.aio.secure_channel(target, pki.unmapped.credentials(pki.ca_pem)) as ch:
            await check_health(ch)  # the channel is fine
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await whoami(ch)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert await whoami(ch, TOKEN) == "token-user/token"

    run_server(grpc_server_credentials(pki.mutual), scenario)


def test_optional_client_certificates_are_refused_for_grpc(pki: Pki) -> None:
    """gRPC Python neither requests nor reports a certificate when it is optional, so that
    configuration would silently never map anyone: it is refused rather than half-honoured."""
    optional = pki.mutual.model_copy(update={"require_client_cert": False})
    with pytest.raises(InvalidInput, match="optional client certificates"):
        grpc_server_credentials(optional)
    assert uvicorn_ssl_kwargs(optional)["ssl_cert_reqs"] == ssl.CERT_OPTIONAL  # REST can


def test_unreadable_tls_files_are_a_configuration_error(pki: Pki) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        grpc_server_credentials(pki.server.model_copy(update={"key_file": str(pki.dir / "missing.key")}))


# The certificate helpers.


def test_peer_certificate_from_auth_context(pki: Pki) -> None:
    pem = _pem(pki.known.cert)
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [pem]}
    cert = peer_certificate(context)
    assert cert is not None
    assert cert.common_name == "payments-client"
    assert cert.uris == ("spiffe://example.test/payments",)
    der = pki.known.cert.public_bytes(serialization.Encoding.DER)
    assert cert.sha256 == hashlib.sha256(der).hexdigest()
    assert peer_certificate({"transport_security_type": [b"insecure"], "x509_pem_cert": [pem]}) is None
    assert peer_certificate({"transport_security_type": [b"ssl"]}) is None
    assert peer_certificate(None) is None
    fallback = peer_certificate(
        {
            "transport_security_type": [b"ssl"],
            "x509_common_name": [b"svc"],
            "x509_subject_alternative_name": [b"spiffe://x/y", b"svc.example", b"10.0.0.1", b"a@b.example"],
        }
    )
    assert fallback == PeerCertificate(
        "svc", dns_names=("svc.example",), uris=("spiffe://x/y",), emails=("a@b.example",), ips=("10.0.0.1",)
    )


def test_mapper_selectors_must_all_match(pki: Pki) -> None:
    cert = PeerCertificate.from_certificate(pki.known.cert)
    base = {"principal": "p", "instances": ["t"], "roles": ["Reader"]}

    def mapped(**selectors: str) -> str | None:
        mapper = CertificateMapper(MtlsConfig.model_validate({"clients": [{**base, **selectors}]}))
        identity = mapper.identify(cert)
        return identity.principal_id if identity else None

    assert mapped(subject_cn="payments-client") == "p"
    assert mapped(san_uri="spiffe://example.test/payments") == "p"
    assert mapped(cert_sha256=(cert.sha256 or "").upper()) == "p"
    assert mapped(subject_cn="payments-client", san_dns="payments.example") is None
    assert mapped(subject_cn="Payments-Client") is None
    assert mapped(san_email="x@example.test") is None


@pytest.mark.parametrize(
    "entry",
    [
        {"principal": "p", "instances": ["t"]},  # selects nothing
        {"subject_cn": "a", "principal": "p", "instances": ["t"], "roles": ["Boss"]},
        {"cert_sha256": "abc", "principal": "p", "instances": ["t"]},
        {"subject_cn": "a", "principal": "p"},
    ],
)
def test_bad_mtls_entries_are_refused(entry: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MtlsConfig.model_validate({"clients": [entry]})


def test_duplicate_selectors_are_refused() -> None:
    e = {"subject_cn": "a", "principal": "p", "instances": "*"}
    with pytest.raises(ValidationError):
        MtlsConfig.model_validate({"clients": [e, {**e, "principal": "q"}]})


def test_uvicorn_kwargs(pki: Pki) -> None:
    assert uvicorn_ssl_kwargs(pki.server) == {
        "ssl_certfile": pki.server.cert_file,
        "ssl_keyfile": pki.server.key_file,
        "ssl_ciphers": "ECDHE+AESGCM:ECDHE+CHACHA20",
    }
    mutual = uvicorn_ssl_kwargs(pki.mutual)
    assert (
        mutual["ssl_cert_reqs"] == ssl.CERT_REQUIRED and mutual["ssl_ca_certs"] == pki.mutual.client_ca_file
    )
    # what uvicorn builds from them loads, and refuses anything below TLS 1.2
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(mutual["ssl_certfile"], mutual["ssl_keyfile"])
    context.set_ciphers(mutual["ssl_ciphers"])
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


# Unix sockets.


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer."""
    with tempfile.TemporaryDirectory(prefix="hsmb") as d:
        yield Path(d)


def test_unix_socket_gets_0600_in_a_private_directory_and_serves(short_dir: Path) -> None:
    path = short_dir / "run" / "hsmbridge.sock"
    address = prepare_unix_socket(path)
    assert address == f"unix:{path}"
    assert stat.S_IMODE((short_dir / "run").stat().st_mode) == 0o700

    async def scenario(target: str) -> None:
        secure_unix_socket(target)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        async with grpc.aio.insecure_channel(target) as ch:
            await check_health(ch)
            assert await whoami(ch, TOKEN) == "token-user/token"

    run_server(None, scenario, address=address)


def test_group_sockets_and_stale_sockets(short_dir: Path) -> None:
    path = short_dir / "g" / "s.sock"
    prepare_unix_socket(path, mode=0o660)
    assert stat.S_IMODE((short_dir / "g").stat().st_mode) == 0o750
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    secure_unix_socket(path, 0o660, group=os.getgid())
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    # a socket left behind by a previous run is replaced
    prepare_unix_socket(path, mode=0o660)
    assert not path.exists()


def test_unix_socket_refuses_to_replace_other_files_and_odd_modes(short_dir: Path) -> None:
    precious = short_dir / "data.db"
    precious.write_text("keep me")
    with pytest.raises(InvalidInput, match="not a socket"):
        prepare_unix_socket(precious)
    assert precious.read_text() == "keep me"
    with pytest.raises(InvalidInput):
        prepare_unix_socket(short_dir / "x.sock", mode=0o666)
    with pytest.raises(InvalidInput):
        secure_unix_socket(short_dir / "x.sock", 0o644)
