"""Leak scan: drive every failure path of the security layer with known secrets, then search all
logs, exception texts and audit lines for them (verbatim, base64 and hex); and scan the source
for log calls or exception constructors that interpolate secret-named variables."""

from __future__ import annotations

import ast
import base64
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import ValidationError

import hsmbridge
from hsmbridge.security.audit import AuditEvent, AuditLog, FileSink, MemorySink
from hsmbridge.security.authn import Authenticator
from hsmbridge.security.authz import ACTIONS, Authorizer
from hsmbridge.security.gate import SecurityGate
from hsmbridge.security.jwt import JwtConfig, JwtVerifier
from hsmbridge.security.secret_files import read_pin, read_secret_file
from hsmbridge.security.tokens import StaticTokenConfig, StaticTokens, hash_token

STATIC_TOKEN = "hsmb_LEAKCANARY-static-0123456789abcdef"
PIN = "LEAKCANARY-pin-8675309"
PLAINTEXT = b"LEAKCANARY-dek-32-bytes-long!!!!"
AAD = "LEAKCANARY-aad-tenant-context"
BASIC_PASSWORD = "LEAKCANARY-basic-password"


def forms(secret: str | bytes) -> set[str]:
    raw = secret.encode() if isinstance(secret, str) else secret
    out = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="), raw.hex()}
    if isinstance(secret, str):
        out.add(secret)
    return out


def texts_of(exc: BaseException) -> list[str]:
    parts = [str(exc), repr(exc), *map(str, exc.args)]
    for attr in ("message", "metadata", "target", "cause"):
        if hasattr(exc, attr):
            parts.append(str(getattr(exc, attr)))
    if exc.__cause__ is not None:
        parts.extend(texts_of(exc.__cause__))
    if exc.__context__ is not None and exc.__context__ is not exc.__cause__:
        parts.extend(texts_of(exc.__context__))
    return parts


def test_no_secret_reaches_a_log_an_exception_or_the_audit_trail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    observed: list[str] = []

    def expect_failure(fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            observed.extend(texts_of(exc))
        else:
            raise AssertionError(f"{fn} did not fail")

    # A JWT whose signature is good but whose issuer is not, and one signed by an unknown key.
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [{**RSAAlgorithm.to_jwk(signer.public_key(), as_dict=True), "kid": "k"}]})
    )
    now = int(time.time())
    claims = {
        "iss": "https://evil.test",
        "aud": "hsmbridge",
        "sub": "LEAKCANARY-sub",
        "iat": now,
        "exp": now + 60,
    }
    bad_issuer = pyjwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k"})
    forged = pyjwt.encode(
        {**claims, "iss": "https://idp.test"}, stranger, algorithm="RS256", headers={"kid": "k"}
    )
    jwt_secrets = [bad_issuer, forged, bad_issuer.split(".")[2], forged.split(".")[2]]

    tokens = StaticTokens(
        [
            StaticTokenConfig(
                token_sha256=hash_token("hsmb_other"), principal="p", instances="*", roles=["Reader"]
            )
        ]
    )
    verifier = JwtVerifier(
        JwtConfig(issuers=["https://idp.test"], audiences=["hsmbridge"], jwks_file=str(jwks))
    )
    authn = Authenticator(tokens=tokens, jwt=verifier)

    # authentication
    for header in (
        f"Bearer {STATIC_TOKEN}",
        f"Bearer {bad_issuer}",
        f"Bearer {forged}",
        "Basic " + base64.b64encode(f"user:{BASIC_PASSWORD}".encode()).decode(),
        f"Token {STATIC_TOKEN}",
    ):
        expect_failure(authn.authenticate, header)
        expect_failure(authn.authenticate, {"authorization": header}, "ipv4:1.2.3.4:5")
    # configuration with a token in the clear, or pasted into the digest field
    expect_failure(
        StaticTokenConfig.model_validate, {"token": STATIC_TOKEN, "principal": "p", "instances": "*"}
    )
    expect_failure(
        StaticTokenConfig.model_validate, {"token_sha256": STATIC_TOKEN, "principal": "p", "instances": "*"}
    )
    # the audit scrubber, given secrets under forbidden names and as binary
    expect_failure(
        AuditEvent.from_fields, {"event": "kms.secrets.wrap", "outcome": "success", "plaintext": PLAINTEXT}
    )
    expect_failure(AuditEvent.from_fields, {"event": "kms.secrets.wrap", "outcome": "success", "aad": AAD})
    expect_failure(
        AuditEvent.from_fields, {"event": "kms.secrets.wrap", "outcome": "success", "key_id": PLAINTEXT}
    )
    expect_failure(
        AuditEvent.from_fields, {"event": "kms.secrets.wrap", "outcome": "success", "reason": f"bad {AAD}"}
    )
    # the gate, failing closed and open, with the caller's secrets in flight
    sink = MemorySink()
    for gate in (
        SecurityGate(Authorizer(), AuditLog(sink)),
        SecurityGate(Authorizer(), AuditLog(FileSink(tmp_path), fail_closed=True)),
    ):
        for header in (f"Bearer {STATIC_TOKEN}", f"Bearer {forged}"):

            def call(h: str = header, g: SecurityGate = gate) -> None:
                with g.call(
                    ACTIONS["kms.secrets.unwrap"], lambda: authn.identify_rest(h), "t", transport="rest"
                ):
                    pass

            expect_failure(call)
    # PIN files: world-readable, empty, missing; the environment variable is consumed
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o644)
    expect_failure(read_secret_file, pin_file)
    expect_failure(read_pin, None, {})
    expect_failure(read_pin, tmp_path / "missing", {})
    pin_file.chmod(0o600)
    assert read_secret_file(pin_file) == PIN.encode()
    environ = {"HSMBRIDGE_HSM_PIN": PIN}
    assert read_pin(None, environ) == PIN.encode()
    assert "HSMBRIDGE_HSM_PIN" not in environ

    out, err = capsys.readouterr()
    haystack = "\n".join(
        [
            *observed,
            *sink.lines,
            out,
            err,
            *(r.getMessage() for r in caplog.records),
            *(r.exc_text or "" for r in caplog.records),
            caplog.text,
        ]
    )
    assert observed and sink.lines  # the scan looked at something
    needles = set()
    for secret in (STATIC_TOKEN, PIN, PLAINTEXT, AAD, BASIC_PASSWORD, *jwt_secrets):
        needles |= forms(secret)
    leaked = sorted(n for n in needles if n in haystack)
    assert not leaked, f"secrets leaked: {leaked}"
    assert "LEAKCANARY" not in haystack.replace("LEAKCANARY-sub", "")  # catch partial echoes too


# Static scan: no log call or exception message interpolates a secret-named variable.

SECRET_NAME = re.compile(
    r"(^|_)(token|tokens|pin|secret|plaintext|payload|aad|authorization|password|dek|private_key|material|"
    r"key_pem|bearer|credentials)($|_)",
    re.IGNORECASE,
)
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}
# Names that hold no secret although they match the pattern above (UPPER_CASE constants are
# skipped too: limits and names such as MAX_PLAINTEXT or PIN_ENV).
ALLOWED = {"token_sha256", "pin_file", "env_var"}


def _is_error_constructor(func: ast.expr) -> bool:
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return bool(
        re.search(r"(Error|Exception|Rejected|Unauthenticated|Denied|Exhausted|Unavailable|Input)$", name)
    )


def _interpolated_names(node: ast.expr) -> list[str]:
    """Names whose values end up inside the text: f-string fields, %/format arguments, and direct
    non-literal arguments (logging's lazy %s)."""
    names = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.append(sub.id)
        elif isinstance(sub, ast.Attribute):
            names.append(sub.attr)
    return names


def _leaky_calls(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_log = isinstance(func, ast.Attribute) and func.attr in LOG_METHODS
        if not (is_log or _is_error_constructor(func)):
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(arg, ast.Constant):
                continue
            for name in _interpolated_names(arg):
                if SECRET_NAME.search(name) and name not in ALLOWED and not name.isupper():
                    found.append((node.lineno, name))
    return found


def _package_sources() -> list[Path]:
    """The whole package, not only the security layer: a leak anywhere is a leak. Generated
    protobuf modules are skipped."""
    root = Path(hsmbridge.__file__).parent
    return sorted(p for p in root.rglob("*.py") if "v1" not in p.relative_to(root).parts)


@pytest.mark.parametrize("path", _package_sources(), ids=lambda p: str(p.relative_to(p.parents[1])))
def test_source_never_formats_secrets_into_logs_or_errors(path: Path) -> None:
    assert not _leaky_calls(ast.parse(path.read_text())), f"{path}: secret-named values in logs/errors"


def test_the_static_scan_catches_the_obvious_mistakes() -> None:
    bad = ast.parse(
        'log.info("token %s", token)\n'
        'raise Unauthenticated(f"bad token {token}")\n'
        'log.debug(f"pin={self.pin}")\n'
        'raise InvalidInput("payload: " + payload.hex())\n'
    )
    assert [name for _, name in _leaky_calls(bad)] == ["token", "token", "pin", "payload"]
    good = ast.parse('log.info("authentication failed: %s", exc.cause)\nraise Unauthenticated(MSG)\n')
    assert _leaky_calls(good) == []


def test_pin_file_mode_and_type_rules(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text("1234\r\n")
    path.chmod(0o640)  # a service group may read it
    assert read_secret_file(path) == b"1234"
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(Exception, match="not a regular file"):
        read_secret_file(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(path)
    with pytest.raises(Exception, match="cannot open"):
        read_secret_file(tmp_path / "link")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    big.chmod(0o600)
    with pytest.raises(Exception, match="larger"):
        read_secret_file(big)
    with pytest.raises(ValidationError):
        JwtConfig.model_validate({})
