"""Huawei Cloud AK/SK request signatures (``SDK-HMAC-SHA256``), verified — never trusted.

Why this is rebuilt from the client's side: Huawei's clients (`huaweicloudsdkcore`'s
``signer/signer.py``, and APIG's signers in other languages, which agree with it) sign

    string to sign = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(SHA-256(canonical request))
    canonical request = METHOD \\n URI \\n QUERY \\n HEADERS \\n SIGNED-HEADERS \\n hex(SHA-256(body))

with URI = every path segment percent-encoded (unreserved + ``~`` kept) and a trailing ``/``
added; QUERY = ``k=v`` pairs sorted and percent-encoded the same way; HEADERS = ``name:value\\n``
for each signed header (lower-case name, stripped value), in the order of SIGNED-HEADERS (sorted
by the client). The server recomputes exactly this from what arrived, so a changed method, path,
query, signed header or body — any byte — gives another signature.

What the server adds to the client's rules, and why:
- ``host`` and ``x-sdk-date`` must be among the signed headers, so a signature cannot be replayed
  against another host or at another time; the date must be within `max_skew` of the server clock.
- The body is always hashed here. A client-supplied ``X-Sdk-Content-Sha256`` (the SDK sends
  ``UNSIGNED-PAYLOAD`` for non-JSON bodies) must equal the real digest: an unsigned body would let
  anyone on the path rewrite the request.
- Signatures are compared with `hmac.compare_digest`; every rejection is one error with a fixed
  cause word for audit (``bad_signature``, ``stale_date``…) and nothing about the expected value.

HMAC needs the secret key itself (unlike a token, it cannot be kept only as a digest), so the SK
is held as bytes in memory; config reads it from a 0600 file (security/secret_files.py), never from
the main configuration file. See docs/operating.md, "Huawei Cloud KMS API".
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, unquote

from hsmbridge.security.jwt import CredentialsRejected

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "x-sdk-date"
CONTENT_HASH_HEADER = "x-sdk-content-sha256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
DEFAULT_MAX_SKEW = timedelta(minutes=15)
_REQUIRED_SIGNED = ("host", DATE_HEADER)
_AUTH = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=(?P<ak>[^,\s]{1,128}),\s*SignedHeaders=(?P<headers>[a-z0-9;._-]{1,2048}),"
    r"\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the verifier needs of an HTTP request, transport-neutral."""

    method: str
    #: the percent-decoded path (ASGI's ``scope["path"]``)
    path: str
    #: the raw query string, undecoded
    query: str
    #: header name (any case) → value
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Authorization:
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str | None) -> Authorization:
    if not value:
        raise CredentialsRejected("missing")
    match = _AUTH.match(value.strip())
    if match is None:
        raise CredentialsRejected("malformed_authorization")
    headers = tuple(match["headers"].split(";"))
    return Authorization(match["ak"], headers, match["sig"])


def _encode(value: str) -> str:
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(query: str) -> str:
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def canonical_request(request: SignedRequest, signed_headers: tuple[str, ...], body_hash: str) -> str:
    lines = []
    for name in signed_headers:
        value = _header(request.headers, name)
        if value is None:
            raise CredentialsRejected("signed_header_missing")
        lines.append(f"{name}:{value.strip()}")
    return "\n".join(
        (
            request.method.upper(),
            canonical_uri(request.path),
            canonical_query(request.query),
            "\n".join(lines) + "\n",
            ";".join(signed_headers),
            body_hash,
        )
    )


def string_to_sign(canonical: str, date: str) -> str:
    return f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def signature(secret_key: bytes, text: str) -> str:
    return hmac.new(secret_key, text.encode(), hashlib.sha256).hexdigest()


class AkSkVerifier:
    """Verifies a request's signature; `secret_for(ak)` returns the SK or None for an unknown AK."""

    def __init__(
        self,
        secret_for: Callable[[str], bytes | None],
        *,
        max_skew: timedelta = DEFAULT_MAX_SKEW,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._secret_for = secret_for
        self._max_skew = max_skew
        self._now = now

    def verify(self, request: SignedRequest) -> str:
        """The verified access key id, or `CredentialsRejected`."""
        auth = parse_authorization(_header(request.headers, "authorization"))
        if list(auth.signed_headers) != sorted(set(auth.signed_headers)) or any(
            name not in auth.signed_headers for name in _REQUIRED_SIGNED
        ):
            raise CredentialsRejected("signed_headers")
        date = (_header(request.headers, DATE_HEADER) or "").strip()
        try:
            signed_at = datetime.strptime(date, DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise CredentialsRejected("bad_date") from None
        if abs(self._now() - signed_at) > self._max_skew:
            raise CredentialsRejected("stale_date")
        body_hash = hashlib.sha256(request.body).hexdigest()
        claimed = _header(request.headers, CONTENT_HASH_HEADER)
        if claimed is not None and not hmac.compare_digest(claimed.strip().lower(), body_hash):
            raise CredentialsRejected("unsigned_or_altered_body")
        canonical = canonical_request(request, auth.signed_headers, body_hash)
        secret = self._secret_for(auth.access_key)
        # An unknown AK still costs one HMAC, so timing does not tell known from unknown AKs.
        expected = signature(secret if secret is not None else b"\x00" * 32, string_to_sign(canonical, date))
        if not hmac.compare_digest(expected, auth.signature) or secret is None:
            raise CredentialsRejected("bad_signature")
        return auth.access_key
