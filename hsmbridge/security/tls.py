"""Transport security: TLS and mutual TLS for gRPC, TLS for REST, and unix-socket permissions.

- `grpc_server_credentials`: server TLS from PEM files; with a client CA, mutual TLS in which the
  handshake itself rejects a client whose certificate does not chain to that CA (or that has none,
  when required). That CA should be private to this service: a certificate's subject only means
  something if nobody else can obtain one from the same CA.
- `peer_certificate` reads the verified client certificate out of a gRPC ``auth_context()``;
  `CertificateMapper` maps it to an `Identity` by subject CN, SAN (DNS, URI — e.g. SPIFFE IDs —,
  e-mail) or SHA-256 fingerprint, per ``[[security.mtls.clients]]``. A verified certificate that
  no entry maps is just an encrypted channel: the caller still needs a bearer token.
- `uvicorn_ssl_kwargs`: REST over TLS (optionally verifying client certificates at the transport).
- `prepare_unix_socket` / `secure_unix_socket`: a local socket readable only by the daemon's user
  (0600) or group (0660). The parent directory is created 0700/0750 so nobody can reach the socket
  in the moment between ``bind()`` (which honours the umask) and the ``chmod()`` after it.
"""

from __future__ import annotations

import grp
import hashlib
import ipaddress
import os
import ssl
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hsmbridge.core.backend import wipe
from hsmbridge.errors import InvalidInput
from hsmbridge.security.principals import Identity, parse_instances, parse_roles

#: TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are not affected by this).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TlsConfig(BaseModel):
    """A listener's TLS: ``[grpc.tls]`` or ``[rest.tls]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: str
    key_file: str
    #: verify client certificates against this CA bundle (mutual TLS)
    client_ca_file: str | None = None
    #: with a client CA: refuse clients without a certificate. False (verify one if presented)
    #: is REST-only: gRPC Python then neither requests nor reports client certificates.
    require_client_cert: bool = True


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def grpc_server_credentials(config: TlsConfig) -> grpc.ServerCredentials:
    """Server credentials for `grpc.aio.Server.add_secure_port`. Our copy of the private key is
    wiped once gRPC has taken its own.

    Optional client certificates are refused for gRPC: with ``require_client_auth=False`` gRPC
    Python does not request a certificate at all, so a configuration that looks like "mTLS when
    the client has a certificate" would silently never see one."""
    if config.client_ca_file and not config.require_client_cert:
        raise InvalidInput(
            "gRPC cannot verify optional client certificates: set require_client_cert = true "
            "or drop client_ca_file"
        )
    chain = _read(config.cert_file)
    key = bytearray(_read(config.key_file))
    try:
        root = _read(config.client_ca_file) if config.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(bytes(key), chain)],
            root_certificates=root,
            require_client_auth=root is not None,
        )
    finally:
        wipe(key)


def uvicorn_ssl_kwargs(config: TlsConfig) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config``. Python's server contexts already
    refuse TLS below 1.2; the cipher string removes TLS 1.2 suites without forward secrecy."""
    kwargs: dict[str, Any] = {
        "ssl_certfile": config.cert_file,
        "ssl_keyfile": config.key_file,
        "ssl_ciphers": TLS12_CIPHERS,
    }
    if config.client_ca_file:
        kwargs["ssl_ca_certs"] = config.client_ca_file
        kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED if config.require_client_cert else ssl.CERT_OPTIONAL
    return kwargs


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What identifies a verified client certificate."""

    common_name: str | None
    dns_names: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    #: hex SHA-256 of the DER certificate
    sha256: str | None = None

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PeerCertificate:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = cns[0].value if cns else None
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = x509.SubjectAlternativeName([])
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(
            common_name=cn if isinstance(cn, str) else None,
            dns_names=tuple(san.get_values_for_type(x509.DNSName)),
            uris=tuple(san.get_values_for_type(x509.UniformResourceIdentifier)),
            emails=tuple(san.get_values_for_type(x509.RFC822Name)),
            ips=tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
            sha256=hashlib.sha256(der).hexdigest(),
        )


AuthContext = Mapping[str, Sequence[bytes]]


def _decoded(values: Iterable[bytes] | None) -> list[str]:
    return [v.decode("utf-8", "replace") for v in values or ()]


def peer_certificate(auth_context: AuthContext | None) -> PeerCertificate | None:
    """The client certificate gRPC verified, from ``context.auth_context()``; None on plaintext
    channels or when the client sent none. gRPC only puts a certificate here after the handshake
    verified it against the configured client CA."""
    if not auth_context or list(auth_context.get("transport_security_type", ())) != [b"ssl"]:
        return None
    pems = list(auth_context.get("x509_pem_cert", ()))
    if pems:
        try:
            return PeerCertificate.from_certificate(x509.load_pem_x509_certificate(pems[0]))
        except ValueError:
            return None
    cns = _decoded(auth_context.get("x509_common_name"))
    sans = _decoded(auth_context.get("x509_subject_alternative_name"))
    if not cns and not sans:
        return None
    ips, names = [], []
    for s in sans:
        try:
            ips.append(str(ipaddress.ip_address(s)))
        except ValueError:
            names.append(s)
    return PeerCertificate(
        common_name=cns[0] if cns else None,
        dns_names=tuple(n for n in names if "://" not in n and "@" not in n),
        uris=tuple(n for n in names if "://" in n),
        emails=tuple(n for n in names if "@" in n and "://" not in n),
        ips=tuple(ips),
    )


class ClientCertIdentity(BaseModel):
    """One ``[[security.mtls.clients]]`` entry: selectors (all given must match) → identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject_cn: str | None = None
    san_dns: str | None = None
    san_uri: str | None = None
    san_email: str | None = None
    cert_sha256: str | None = None
    principal: str = Field(min_length=1, max_length=256)
    instances: list[str] | Literal["*"]
    roles: list[str] = Field(default_factory=list)
    key_purge: bool = False

    @field_validator("cert_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.replace(":", "").strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("cert_sha256 is the 64 hex digits of the certificate's SHA-256 fingerprint")
        return value

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        parse_roles(value, strict=True)
        return value

    @model_validator(mode="after")
    def _selects_something(self) -> ClientCertIdentity:
        if not self.selectors():
            raise ValueError(
                "a [[security.mtls.clients]] entry needs one of "
                "subject_cn, san_dns, san_uri, san_email, cert_sha256"
            )
        return self

    def selectors(self) -> tuple[tuple[str, str], ...]:
        names = ("subject_cn", "san_dns", "san_uri", "san_email", "cert_sha256")
        return tuple((n, getattr(self, n)) for n in names if getattr(self, n) is not None)

    def matches(self, cert: PeerCertificate) -> bool:
        for name, want in self.selectors():
            if name == "subject_cn":
                ok = cert.common_name == want
            elif name == "san_dns":
                ok = want.lower() in (d.lower() for d in cert.dns_names)
            elif name == "san_uri":
                ok = want in cert.uris
            elif name == "san_email":
                ok = want.lower() in (e.lower() for e in cert.emails)
            else:
                ok = cert.sha256 == want
            if not ok:
                return False
        return True

    def identity(self) -> Identity:
        roles, purge = parse_roles(self.roles, strict=True)
        return Identity(
            self.principal,
            instances=parse_instances(self.instances),
            roles=roles,
            key_purge=self.key_purge or purge,
            method="mtls",
        )


class MtlsConfig(BaseModel):
    """``[security.mtls]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clients: list[ClientCertIdentity] = Field(default_factory=list)

    @field_validator("clients")
    @classmethod
    def _distinct(cls, value: list[ClientCertIdentity]) -> list[ClientCertIdentity]:
        seen = set()
        for entry in value:
            if entry.selectors() in seen:
                raise ValueError("two [[security.mtls.clients]] entries select the same certificates")
            seen.add(entry.selectors())
        return value


class CertificateMapper:
    """Client certificate → identity: the first configured entry that matches wins."""

    def __init__(self, config: MtlsConfig) -> None:
        self._entries = tuple((e, e.identity()) for e in config.clients)

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, cert: PeerCertificate | None) -> Identity | None:
        if cert is None:
            return None
        for entry, identity in self._entries:
            if entry.matches(cert):
                return identity
        return None


# Unix sockets.

SocketMode = Literal[0o600, 0o660]


def prepare_unix_socket(path: str | Path, mode: int = 0o600) -> str:
    """Make `path` ready to bind: create its directory (0700, or 0750 for a group socket) and
    remove a stale socket left by a previous run. Anything else at the path is refused, never
    deleted. Returns the ``unix:`` address gRPC binds (uvicorn takes the plain path as ``uds``)."""
    if mode not in (0o600, 0o660):
        raise InvalidInput("unix socket mode must be 0600 (owner) or 0660 (owner and group)")
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750 if mode == 0o660 else 0o700)
    try:
        info = path.lstat()
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise InvalidInput(f"{path} exists and is not a socket; refusing to replace it")
        path.unlink()
    return f"unix:{path}"


def secure_unix_socket(path: str | Path, mode: int = 0o600, group: str | int | None = None) -> None:
    """After bind: set the socket's mode (and group, for 0660 sockets shared with a client group)."""
    if mode not in (0o600, 0o660):
        raise InvalidInput("unix socket mode must be 0600 (owner) or 0660 (owner and group)")
    path = Path(str(path).removeprefix("unix:"))
    if group is not None:
        gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
        os.chown(path, -1, gid)
    os.chmod(path, mode)
