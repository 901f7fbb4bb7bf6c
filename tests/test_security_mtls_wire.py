"""Mutual TLS in front of the real gRPC services: `build_server` on 127.0.0.1 with
`security.tls.grpc_server_credentials` (client certificates required) and a throw-away PKI.

- a client certificate of the trusted CA mapped to a Writer principal creates keys and wraps as
  that principal (audited as ``mtls``), and gets no more than a Writer of its instance may;
- a certificate from another CA — even with the very same subject and SAN — is refused in the
  handshake (UNAVAILABLE), as are clients without a certificate and plaintext clients: none of
  them reaches a handler (no audit event);
- a certificate of the trusted CA that no ``[[security.mtls.clients]]`` entry maps is just an
  encrypted channel: UNAUTHENTICATED without a bearer token, the token's rights with one.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2
from security_support import CALLERS, INSTANCE_A, INSTANCE_B, GrpcServer, Stack, Stubs, caller_tokens

from hsmbridge.security.authn import Authenticator
from hsmbridge.security.tls import CertificateMapper, MtlsConfig, TlsConfig, grpc_server_credentials
from hsmbridge.v1 import crypto_pb2, keys_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

SPIFFE = "spiffe://example.test/ns/payments/sa/worker"
PRINCIPAL = "svc-payments-worker"


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


@dataclass(frozen=True)
class Client:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def credentials(self, root: bytes) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=_key_pem(self.key), certificate_chain=_pem(self.cert)
        )


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    mutual: TlsConfig
    known: Client
    unmapped: Client
    rogue: Client


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d: Path = tmp_path_factory.mktemp("pki")
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
    spiffe = [x509.UniformResourceIdentifier(SPIFFE)]
    known_key, unmapped_key, rogue_ca_key, rogue_key = _key(), _key(), _key(), _key()
    known = _cert("payments-worker", known_key, ca, ca_key, san=spiffe)
    unmapped = _cert("batch-job", unmapped_key, ca, ca_key)
    # another CA with the same name, issuing a certificate with the same subject and SAN
    rogue_ca = _cert("hsmbridge test client CA", rogue_ca_key, None, rogue_ca_key, ca=True)
    rogue = _cert("payments-worker", rogue_key, rogue_ca, rogue_ca_key, san=spiffe)
    (d / "ca.pem").write_bytes(_pem(ca))
    (d / "server.pem").write_bytes(_pem(server))
    (d / "server.key").write_bytes(_key_pem(server_key))
    (d / "server.key").chmod(0o600)
    mutual = TlsConfig(
        cert_file=str(d / "server.pem"), key_file=str(d / "server.key"), client_ca_file=str(d / "ca.pem")
    )
    return Pki(
        _pem(ca), mutual, Client(known, known_key), Client(unmapped, unmapped_key), Client(rogue, rogue_key)
    )


@pytest.fixture(scope="module")
def grpc_credentials(pki: Pki) -> grpc.ServerCredentials:
    return grpc_server_credentials(pki.mutual)


@pytest.fixture(scope="module")
def security_authenticator() -> Authenticator:
    mtls = MtlsConfig.model_validate(
        {
            "clients": [
                {
                    "subject_cn": "payments-worker",
                    "san_uri": SPIFFE,
                    "principal": PRINCIPAL,
                    "instances": [INSTANCE_A],
                    "roles": ["Writer"],
                }
            ]
        }
    )
    return Authenticator(tokens=caller_tokens(), certificates=CertificateMapper(mtls))


Connect = Callable[[grpc.ChannelCredentials | None], Stubs]


@pytest.fixture
def connect(grpc_server: GrpcServer) -> Iterator[Connect]:
    channels: list[grpc.Channel] = []

    def open_stubs(credentials: grpc.ChannelCredentials | None) -> Stubs:
        channel = grpc_server.channel(credentials)
        channels.append(channel)
        return Stubs(channel)

    yield open_stubs
    for channel in channels:
        channel.close()


def handshake_refused(stubs: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stubs.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as again:
        stubs.crypto.Wrap(
            crypto_pb2.WrapRequest(key_id="x"), metadata=(("bluemix-instance", INSTANCE_A),), timeout=10
        )
    assert again.value.code() is grpc.StatusCode.UNAVAILABLE


TENANT_A = (("bluemix-instance", INSTANCE_A),)


def test_a_mapped_client_certificate_is_its_principal(pki: Pki, stack: Stack, connect: Connect) -> None:
    stubs = connect(pki.known.credentials(pki.ca_pem))
    stack.take_events()
    key = stubs.keys.CreateKey(keys_pb2.CreateKeyRequest(name="via-mtls"), metadata=TENANT_A, timeout=30)
    assert key.created_by == PRINCIPAL
    wrapped = stubs.crypto.Wrap(crypto_pb2.WrapRequest(key_id=key.id), metadata=TENANT_A, timeout=30)
    assert wrapped.plaintext and wrapped.ciphertext
    events = stack.take_events()
    assert [(e["event"], e["principal"], e["auth_method"], e["outcome"]) for e in events] == [
        ("kms.secrets.create", PRINCIPAL, "mtls", "success"),
        ("kms.secrets.wrap", PRINCIPAL, "mtls", "success"),
    ]
    # a Writer, of instance A only
    with pytest.raises(grpc.RpcError) as manager_only:
        stubs.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=key.id), metadata=TENANT_A, timeout=30)
    assert manager_only.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as elsewhere:
        stubs.keys.ListKeys(
            keys_pb2.ListKeysRequest(), metadata=(("bluemix-instance", INSTANCE_B),), timeout=30
        )
    assert elsewhere.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_certificate_of_another_ca_is_refused_in_the_handshake_even_with_the_same_subject(
    pki: Pki, stack: Stack, connect: Connect
) -> None:
    assert pki.rogue.cert.subject == pki.known.cert.subject
    stack.take_events()
    handshake_refused(connect(pki.rogue.credentials(pki.ca_pem)))
    assert stack.take_events() == [], "the refused client never reached a handler"


def test_clients_without_a_certificate_and_plaintext_clients_are_refused(
    pki: Pki, stack: Stack, connect: Connect
) -> None:
    stack.take_events()
    handshake_refused(connect(grpc.ssl_channel_credentials(pki.ca_pem)))
    handshake_refused(connect(None))
    assert stack.take_events() == []


def test_a_trusted_but_unmapped_certificate_needs_a_bearer_token(
    pki: Pki, stack: Stack, connect: Connect
) -> None:
    stubs = connect(pki.unmapped.credentials(pki.ca_pem))
    reply = stubs.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING  # the channel itself is fine
    stack.take_events()
    with pytest.raises(grpc.RpcError) as info:
        stubs.keys.ListKeys(keys_pb2.ListKeysRequest(), metadata=TENANT_A, timeout=30)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    (event,) = stack.take_events()
    assert (event["reason"], event["cause"], event["principal"]) == ("UNAUTHENTICATED", "missing", None)
    reader = CALLERS["reader"]
    listed = stubs.keys.ListKeys(keys_pb2.ListKeysRequest(), metadata=reader.grpc(), timeout=30)
    assert listed.total >= 0
    (event,) = stack.take_events()
    assert (event["principal"], event["auth_method"]) == (reader.principal, "token")


def test_a_bad_token_on_a_mapped_channel_never_falls_back_to_the_certificate(
    pki: Pki, stack: Stack, connect: Connect
) -> None:
    stubs = connect(pki.known.credentials(pki.ca_pem))
    with pytest.raises(grpc.RpcError) as info:
        stubs.keys.ListKeys(
            keys_pb2.ListKeysRequest(),
            metadata=(("authorization", "Bearer hsmb_wrong"), *TENANT_A),
            timeout=30,
        )
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
