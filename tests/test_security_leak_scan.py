"""Leak scan over a full flow on the wire: after create, secure import (OAEP SHA-256 and SHA-1),
wrap with and without a DEK, unwrap, rotate (generated and imported material), rewrap, batches
and standard-key payload reads — over REST *and* gRPC, with failures mixed in (tampered and
wrong-AAD unwraps, a wrong-nonce import, unknown tokens) and a second HSM login using the PIN —
every captured line is searched for every secret the flow used:

    captured: root logger at DEBUG (message, formatted text and each record's attributes),
              stdout/stderr at the file-descriptor level (so gRPC's C core counts too), every
              audit line, and every error body / gRPC error detail sent to a client
    secrets:  key materials (imported, rotated, standard payloads), DEKs (given and generated),
              the import tokens' nonces, every bearer token (configured and rejected), the PIN
    forms:    raw (latin-1), hex (lower and upper), base64 and URL-safe base64, each with and
              without padding

Zero hits are allowed. The import tokens' public keys may appear; no private key may (no
``PRIVATE KEY`` PEM marker anywhere). A positive control proves the scanner finds a secret
planted in each channel and in each form.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from security_support import CALLERS, Stack, Stubs, b64, key_body, seal_for_import

from hsmbridge.hsm.backend import Pkcs11Backend
from hsmbridge.v1 import crypto_pb2, import_tokens_pb2, keys_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

C, K = crypto_pb2, keys_pb2


def forms(secret: str | bytes) -> dict[str, str]:
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    b64s, url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    return {
        "raw": secret if isinstance(secret, str) else raw.decode("latin-1"),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "base64": b64s,
        "base64-unpadded": b64s.rstrip("="),
        "base64url": url,
        "base64url-unpadded": url.rstrip("="),
    }


def scan(lines: Iterable[str], secrets: dict[str, str | bytes]) -> list[str]:
    """Every (secret, form, channel) hit; `lines` are (channel, text) joined as 'channel: text'."""
    corpus = list(lines)
    hits = []
    for name, secret in secrets.items():
        for form, needle in forms(secret).items():
            for line in corpus:
                if needle in line:
                    hits.append(f"{name} as {form} in {line[:60]!r}")
    return hits


class Capture:
    """Everything a secret could leak into, besides the successful response bodies."""

    def __init__(
        self, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], stack: Stack
    ) -> None:
        self.caplog, self.capfd, self.stack = caplog, capfd, stack
        self.client_errors: list[str] = []

    def rest_error(self, response: Any) -> Any:
        assert response.status_code >= 400, response.text
        self.client_errors.append(
            f"rest-error: {response.status_code} {dict(response.headers)} {response.text}"
        )
        return response

    def grpc_error(self, err: grpc.RpcError) -> None:
        self.client_errors.append(f"grpc-error: {err.code()} {err.details()} {err.trailing_metadata()}")
        self.client_errors.append(f"grpc-error: {err.debug_error_string()}")  # type: ignore[attr-defined]

    def lines(self) -> list[str]:
        out, err = self.capfd.readouterr()
        lines = [f"log: {self.caplog.text}", f"stdout: {out}", f"stderr: {err}"]
        for record in self.caplog.records:
            lines.append(f"log-message: {record.getMessage()}")
            # every attribute on its own (str, not repr, so raw text stays raw): extras and
            # arguments a formatter might drop still count
            for name, value in record.__dict__.items():
                values = value if name == "args" and isinstance(value, tuple) else (value,)
                lines.extend(f"log-attr {name}: {v}" for v in values)
        lines += [f"audit: {line}" for line in self.stack.sink.lines]
        return lines + self.client_errors


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], stack: Stack) -> Capture:
    caplog.set_level(logging.DEBUG)
    return Capture(caplog, capfd, stack)


def rest_flow(rest: TestClient, stack: Stack, cap: Capture, secrets: dict[str, str | bytes]) -> None:
    writer, manager, reader_plus = CALLERS["writer"], CALLERS["manager"], CALLERS["reader_plus"]

    def post(path: str, body: Any = None, caller: Any = writer, status: int = 200) -> Any:
        response = rest.post(path, json=body, headers=caller.rest())
        assert response.status_code == status, (path, response.text)
        return response.json() if response.content else None

    post("/api/v2/import_token", {"maxAllowedRetrievals": 3})
    token = rest.get("/api/v2/import_token", headers=writer.rest()).json()
    pem, nonce = base64.b64decode(token["payload"]), base64.b64decode(token["nonce"])
    secrets["rest import nonce"] = nonce
    assert b"PUBLIC KEY" in pem
    imported = {}
    for label, sha1 in (("sha256", False), ("sha1", True)):
        material = secrets[f"rest import material {label}"] = os.urandom(32)
        sealed = seal_for_import(pem, nonce, material, sha1=sha1)
        imported[label] = post("/api/v2/keys", key_body(f"imported-{label}", **sealed["rest"]), status=201)[
            "resources"
        ][0]["id"]
    # an import whose nonce was sealed wrong: 400, and the material stays secret
    wrong = secrets["rest material with a wrong nonce"] = os.urandom(32)
    sealed = seal_for_import(pem, os.urandom(12), wrong)
    cap.rest_error(rest.post("/api/v2/keys", json=key_body("wrong", **sealed["rest"]), headers=writer.rest()))

    root = post("/api/v2/keys", key_body("root"), status=201)["resources"][0]["id"]
    dek = secrets["rest DEK given"] = os.urandom(32)
    wrapped = post(f"/api/v2/keys/{root}/actions/wrap", {"plaintext": b64(dek), "aad": ["leak-scan"]})
    generated = post(f"/api/v2/keys/{root}/actions/wrap", {})
    secrets["rest DEK generated"] = base64.b64decode(generated["plaintext"])
    unwrapped = post(
        f"/api/v2/keys/{root}/actions/unwrap", {"ciphertext": wrapped["ciphertext"], "aad": ["leak-scan"]}
    )
    assert base64.b64decode(unwrapped["plaintext"]) == dek
    cap.rest_error(
        rest.post(
            f"/api/v2/keys/{root}/actions/unwrap",
            json={"ciphertext": wrapped["ciphertext"]},
            headers=writer.rest(),
        )
    )
    tampered = bytearray(base64.b64decode(generated["ciphertext"]))
    tampered[-3] ^= 0x40
    cap.rest_error(
        rest.post(
            f"/api/v2/keys/{root}/actions/unwrap",
            json={"ciphertext": b64(bytes(tampered))},
            headers=writer.rest(),
        )
    )
    post(f"/api/v2/keys/{root}/actions/rotate", status=204)
    rotated = secrets["rest rotation material"] = os.urandom(32)
    sealed = seal_for_import(pem, nonce, rotated)
    post(f"/api/v2/keys/{imported['sha256']}/actions/rotate", sealed["rest"], status=204)
    post(f"/api/v2/keys/{root}/actions/rewrap", {"ciphertext": wrapped["ciphertext"], "aad": ["leak-scan"]})
    post(f"/api/v2/keys/{imported['sha1']}/actions/wrap", {"plaintext": b64(dek)})

    standard = secrets["rest standard payload"] = os.urandom(48)
    given = post("/api/v2/keys", key_body("standard", extractable=True, payload=b64(standard)), status=201)
    made = post("/api/v2/keys", key_body("standard-generated", extractable=True), status=201)
    for key in (given, made):
        read = rest.get(f"/api/v2/keys/{key['resources'][0]['id']}", headers=reader_plus.rest()).json()
        secrets[f"rest standard payload read {key['resources'][0]['name']}"] = base64.b64decode(
            read["resources"][0]["payload"]
        )
    assert secrets["rest standard payload read standard"] == standard
    bad = secrets["rest rejected token"] = "hsmb_" + base64.urlsafe_b64encode(os.urandom(24)).decode()
    cap.rest_error(
        rest.get("/api/v2/keys", headers={"authorization": f"Bearer {bad}", "bluemix-instance": "x"})
    )
    cap.rest_error(rest.post(f"/api/v2/keys/{root}/actions/disable", headers=writer.rest()))  # denied
    assert (
        rest.delete(f"/api/v2/keys/{given['resources'][0]['id']}", headers=manager.rest()).status_code == 204
    )


def grpc_flow(stubs: Stubs, cap: Capture, secrets: dict[str, str | bytes]) -> None:
    writer, reader_plus = CALLERS["writer"].grpc(), CALLERS["reader_plus"].grpc()

    def refused(rpc: Any, request: Any, metadata: Any = writer) -> None:
        with pytest.raises(grpc.RpcError) as info:
            rpc(request, metadata=metadata, timeout=30)
        cap.grpc_error(info.value)

    stubs.tokens.CreateImportToken(import_tokens_pb2.CreateImportTokenRequest(key_bits=2048), metadata=writer)
    token = stubs.tokens.GetImportToken(import_tokens_pb2.GetImportTokenRequest(), metadata=writer)
    secrets["grpc import nonce"] = token.nonce
    pem = token.public_key_pem.encode()

    def secure(material: bytes, sha1: bool = False, nonce: bytes | None = None) -> K.KeyMaterial:
        sealed = seal_for_import(pem, token.nonce if nonce is None else nonce, material, sha1=sha1)
        return K.KeyMaterial(
            secure=K.SecureMaterial(
                encrypted_key=sealed["encrypted_key"],
                iv=sealed["iv"],
                encrypted_nonce=sealed["encrypted_nonce"],
                oaep_hash=K.OAEP_HASH_SHA1 if sha1 else K.OAEP_HASH_SHA256,
            )
        )

    for label, sha1 in (("sha256", False), ("sha1", True)):
        material = secrets[f"grpc import material {label}"] = os.urandom(32)
        key = stubs.keys.ImportKey(
            K.ImportKeyRequest(
                key=K.CreateKeyRequest(name=f"imported-{label}"), material=secure(material, sha1)
            ),
            metadata=writer,
        )
        assert key.imported
    wrong = secrets["grpc material with a wrong nonce"] = os.urandom(32)
    refused(
        stubs.keys.ImportKey,
        K.ImportKeyRequest(
            key=K.CreateKeyRequest(name="wrong"), material=secure(wrong, nonce=os.urandom(12))
        ),
    )

    root = stubs.keys.CreateKey(K.CreateKeyRequest(name="root"), metadata=writer).id
    dek = secrets["grpc DEK given"] = os.urandom(32)
    wrapped = stubs.crypto.Wrap(C.WrapRequest(key_id=root, plaintext=dek, aad=["leak-scan"]), metadata=writer)
    generated = stubs.crypto.Wrap(C.WrapRequest(key_id=root), metadata=writer)
    secrets["grpc DEK generated"] = generated.plaintext
    assert (
        stubs.crypto.Unwrap(
            C.UnwrapRequest(key_id=root, ciphertext=wrapped.ciphertext, aad=["leak-scan"]), metadata=writer
        ).plaintext
        == dek
    )
    refused(stubs.crypto.Unwrap, C.UnwrapRequest(key_id=root, ciphertext=wrapped.ciphertext))
    stubs.keys.RotateKey(K.RotateKeyRequest(key_id=root), metadata=writer)
    stubs.crypto.Rewrap(C.RewrapRequest(key_id=root, ciphertext=generated.ciphertext), metadata=writer)
    batch_dek = secrets["grpc DEK in a batch"] = os.urandom(32)
    batch = stubs.crypto.WrapBatch(
        C.WrapBatchRequest(key_id=root, items=[C.WrapRequest(plaintext=batch_dek), C.WrapRequest()]),
        metadata=writer,
    )
    secrets["grpc DEK generated in a batch"] = batch.results[1].response.plaintext
    opened = stubs.crypto.UnwrapBatch(
        C.UnwrapBatchRequest(
            key_id=root,
            items=[
                C.UnwrapRequest(ciphertext=batch.results[0].response.ciphertext),
                C.UnwrapRequest(ciphertext=batch.results[1].response.ciphertext[:-1] + b"\x00"),
            ],
        ),
        metadata=writer,
    )
    assert opened.results[0].response.plaintext == batch_dek and opened.results[1].status.code != 0

    standard = secrets["grpc standard payload"] = os.urandom(48)
    given = stubs.keys.ImportKey(
        K.ImportKeyRequest(
            key=K.CreateKeyRequest(name="standard", extractable=True),
            material=K.KeyMaterial(plaintext=standard),
        ),
        metadata=writer,
    )
    made = stubs.keys.CreateKey(
        K.CreateKeyRequest(name="standard-generated", extractable=True), metadata=writer
    )
    for key in (given, made):
        payload = stubs.keys.GetKeyPayload(
            K.GetKeyPayloadRequest(key_id=key.id), metadata=reader_plus
        ).payload
        secrets[f"grpc standard payload read {key.name}"] = payload
    assert secrets["grpc standard payload read standard"] == standard
    bad = secrets["grpc rejected token"] = "hsmb_" + base64.urlsafe_b64encode(os.urandom(24)).decode()
    refused(
        stubs.keys.ListKeys,
        K.ListKeysRequest(),
        (("authorization", f"Bearer {bad}"), ("bluemix-instance", "x")),
    )
    refused(stubs.keys.GetKeyPayload, K.GetKeyPayloadRequest(key_id=root), reader_plus)


def test_no_secret_of_a_full_flow_reaches_a_log_the_audit_trail_or_an_error(
    rest: TestClient,
    stubs: Stubs,
    stack: Stack,
    capture: Capture,
    hsm_settings: Any,
    softhsm_token: dict[str, str],
) -> None:
    secrets: dict[str, str | bytes] = {f"token of {c.name}": c.token for c in CALLERS.values()}
    secrets["HSM PIN"] = softhsm_token["pin"]
    # a second HSM login inside the capture: the PIN goes through the whole login path once more
    second = Pkcs11Backend(replace(hsm_settings, pool_size=1))
    second.close()
    rest_flow(rest, stack, capture, secrets)
    grpc_flow(stubs, capture, secrets)

    lines = capture.lines()
    assert capture.caplog.records, "DEBUG logging was captured"
    transports = {e["transport"] for e in stack.events()}
    assert len(stack.sink.lines) > 30 and transports == {"rest", "grpc"}, "both flows were audited"
    assert len(secrets) >= 25
    assert all(len(s) >= 12 for s in secrets.values())
    assert scan(lines, secrets) == []
    assert not [line[:80] for line in lines if "PRIVATE KEY" in line]


@pytest.mark.parametrize("form", list(forms(b"x")))
@pytest.mark.parametrize("channel", ["log", "log-args", "stdout", "stderr", "audit", "client-error"])
def test_the_scanner_finds_a_planted_secret(stack: Stack, capture: Capture, channel: str, form: str) -> None:
    """Positive control: a secret leaked in any one form through any one channel is found."""
    secret = os.urandom(24)
    needle = forms(secret)[form]
    log = logging.getLogger("hsmbridge.leak-canary")
    if channel == "log":
        log.debug("oops %s", needle)
    elif channel == "log-args":
        log.debug("not formatted into the message", extra={"material": needle})
    elif channel in ("stdout", "stderr"):
        # at the file-descriptor level, as a C library (gRPC core, the PKCS#11 module) would write
        os.write(1 if channel == "stdout" else 2, needle.encode() + b"\n")
    elif channel == "audit":
        stack.gate.audit.record(event="kms.secrets.wrap", outcome="failure", correlation_id=needle)
    else:
        capture.client_errors.append(f"rest-error: 400 {needle}")
    hits = scan(capture.lines(), {"planted": secret})
    if channel == "audit" and form == "raw":
        # the audit log escapes non-printable text, so raw random bytes cannot appear verbatim
        # there — the encoded forms are what the audit trail could carry
        return
    assert any(h.startswith(f"planted as {form} ") for h in hits), (channel, form, hits)


@pytest.mark.parametrize("rpc", ["WrapBatch", "CryptoStream"])
def test_an_unexpected_error_reaches_the_client_as_internal_without_its_text(
    stubs: Stubs, stack: Stack, capture: Capture, monkeypatch: pytest.MonkeyPatch, rpc: str
) -> None:
    """A bug or a library error below the domain layer may carry a buffer in its message. Unary
    RPCs and the bulk stream alike answer INTERNAL with a fixed text, log only the exception's
    type, and audit the failed call (and the stream's failed message) as INTERNAL."""
    leaked = "hsmb-canary-" + os.urandom(16).hex()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"library failure with buffer {leaked}")

    key = stack.new_key(name="broken")
    monkeypatch.setattr(stack.services.batches, "wrap", broken)
    stack.take_events()
    batch = C.WrapBatchRequest(key_id=key.id, items=[C.WrapRequest()])
    with pytest.raises(grpc.RpcError) as info:
        if rpc == "WrapBatch":
            stubs.crypto.WrapBatch(batch, metadata=CALLERS["writer"].grpc(), timeout=30)
        else:
            message = C.CryptoStreamRequest(sequence=1, wrap=batch)
            list(stubs.crypto.CryptoStream(iter([message]), metadata=CALLERS["writer"].grpc(), timeout=30))
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    capture.grpc_error(info.value)
    assert [line for line in capture.lines() if leaked in line] == []
    events = [(e["event"], e["reason"]) for e in stack.take_events()]
    expected = [("kms.secrets.wrap", "INTERNAL")]
    assert events == (expected if rpc == "WrapBatch" else [*expected, ("kms.secrets.unwrap", "INTERNAL")])
