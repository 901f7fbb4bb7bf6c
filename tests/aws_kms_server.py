"""A small AWS KMS endpoint for the push tests: exactly the calls an import needs, in AWS's
documented JSON 1.1 wire format, with real cryptography.

Why it exists: moto 5.2.5 implements neither GetParametersForImport nor ImportKeyMaterial (see
/work/shared/PITFALLS.md), and no emulator on the registries here does. It implements CreateKey,
DescribeKey, GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial, Encrypt and
Decrypt as AWS documents them (``POST /``, ``X-Amz-Target: TrentService.<Operation>``,
``application/x-amz-json-1.1``, blobs in base64, timestamps in epoch seconds, errors as HTTP 400
with ``{"__type": ..., "message": ...}``), and it checks the SigV4 signature of every request
against its one account's credentials, so wrong credentials fail as AWS fails them
(UnrecognizedClientException, InvalidSignatureException).

The import is real: the wrapping key pair is generated per GetParametersForImport, the material
is decrypted with RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256 or RSA_AES_KEY_WRAP_SHA_256, a reimport of
different material is IncorrectKeyMaterialException, and Encrypt/Decrypt use AES-256-GCM under
the imported material, so a decrypt round trip across a delete-and-reimport proves the same
bytes arrived. `material_check_value` (AES-CMAC of a zero block, 3 bytes) lets a test compare.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

ACCOUNT = "111122223333"
ACCESS_KEY_ID = "AKIAHSMBRIDGETEST01"
SECRET_ACCESS_KEY = "hsmbridge/test/secret/access/key/0123456789"
WRAPPING_ALGORITHMS = ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256")
_SIZES = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}


class KmsError(Exception):
    def __init__(self, kind: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status


@dataclass
class _Key:
    key_id: str
    region: str
    origin: str
    description: str
    created: float
    state: str
    material: bytes | None = None
    #: what the key was first given: AWS accepts only these bytes again
    first_material_digest: bytes | None = None
    valid_to: float | None = None
    expiration_model: str | None = None
    tokens: dict[bytes, tuple[rsa.RSAPrivateKey, str, float]] = field(default_factory=dict)

    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{ACCOUNT}:key/{self.key_id}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (TypeError, ValueError):
        raise KmsError("ValidationException", f"{name} is not valid base64") from None


class AwsKmsServer:
    def __init__(self, region: str = "eu-west-1", *, session_token: str | None = None) -> None:
        self.region = region
        self.session_token = session_token
        self.keys: dict[str, _Key] = {}
        self.calls: list[str] = []
        self.lock = threading.Lock()
        #: seconds each request waits before answering (timeouts tests)
        self.delay = 0.0
        #: seconds added to the server's clock, so a test moves it past ValidTo instead of waiting
        self.clock_offset = 0.0
        self._wrapping_keys: dict[int, rsa.RSAPrivateKey] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def now(self) -> float:
        return time.time() + self.clock_offset

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> AwsKmsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def material_check_value(self, key_id: str) -> str | None:
        material = self.keys[key_id].material
        if material is None:
            return None
        mac = CMAC(algorithms.AES(material))
        mac.update(b"\x00" * 16)
        return mac.finalize()[:3].hex().upper()

    # -- HTTP and SigV4 ----------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if server.delay:
                    time.sleep(server.delay)
                try:
                    server._verify(self.command, self.path, dict(self.headers.items()), body)
                    target = self.headers.get("x-amz-target", "")
                    if not target.startswith("TrentService."):
                        raise KmsError("UnknownOperationException", "unknown operation")
                    operation = target.removeprefix("TrentService.")
                    handler = getattr(server, f"op_{operation}", None)
                    if handler is None:
                        raise KmsError("UnknownOperationException", f"{operation} is not implemented here")
                    request = json.loads(body or b"{}")
                    with server.lock:
                        server.calls.append(operation)
                        answer, status = handler(request), 200
                except KmsError as err:
                    answer, status = {"__type": err.kind, "message": err.message}, err.status
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/x-amz-json-1.1")
                    self.send_header("x-amzn-requestid", str(uuid.uuid4()))
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): as a real server, carry on

        return Handler

    def _verify(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        """AWS Signature Version 4 (the documented algorithm), for this server's one account."""
        lower = {k.lower(): v for k, v in headers.items()}
        auth = lower.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            raise KmsError("MissingAuthenticationTokenException", "Missing Authentication Token")
        parts = dict(p.strip().split("=", 1) for p in auth.removeprefix("AWS4-HMAC-SHA256 ").split(","))
        key_id, date, region, service, _ = parts["Credential"].split("/")
        if key_id != ACCESS_KEY_ID:
            raise KmsError(
                "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        if self.session_token is not None and lower.get("x-amz-security-token") != self.session_token:
            raise KmsError(
                "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        signed = parts["SignedHeaders"].split(";")
        canonical = "\n".join(
            [
                method,
                path.split("?", 1)[0] or "/",
                "",
                "".join(f"{h}:{' '.join(lower.get(h, '').split())}\n" for h in signed),
                parts["SignedHeaders"],
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                lower.get("x-amz-date", ""),
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        signing = ("AWS4" + SECRET_ACCESS_KEY).encode()
        for piece in (date, region, service, "aws4_request"):
            signing = hmac.new(signing, piece.encode(), hashlib.sha256).digest()
        expected = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, parts.get("Signature", "")):
            raise KmsError(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            )

    # -- keys ------------------------------------------------------------------------------------

    def _key(self, request: dict[str, Any]) -> _Key:
        ref = str(request.get("KeyId", ""))
        key = self.keys.get(ref.rsplit("/", 1)[-1])
        if key is None:
            raise KmsError("NotFoundException", f"Key '{ref}' does not exist")
        if key.valid_to is not None and key.valid_to <= self.now() and key.material is not None:
            key.material, key.state = None, "PendingImport"  # AWS deletes expired material
        return key

    def _metadata(self, key: _Key) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "AWSAccountId": ACCOUNT,
            "KeyId": key.key_id,
            "Arn": key.arn(),
            "CreationDate": key.created,
            "Enabled": key.state == "Enabled",
            "Description": key.description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": key.state,
            "Origin": key.origin,
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "MultiRegion": False,
        }
        if key.expiration_model:
            meta["ExpirationModel"] = key.expiration_model
        if key.valid_to is not None:
            meta["ValidTo"] = key.valid_to
        return meta

    def op_CreateKey(self, request: dict[str, Any]) -> dict[str, Any]:
        origin = request.get("Origin", "AWS_KMS")
        if origin not in ("AWS_KMS", "EXTERNAL"):
            raise KmsError("UnsupportedOperationException", f"Origin {origin} is not supported here")
        spec = request.get("KeySpec") or request.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
        if spec != "SYMMETRIC_DEFAULT":
            raise KmsError("UnsupportedOperationException", f"KeySpec {spec} is not supported here")
        key = _Key(
            key_id=str(uuid.uuid4()),
            region=self.region,
            origin=origin,
            description=str(request.get("Description", "")),
            created=self.now(),
            state="PendingImport" if origin == "EXTERNAL" else "Enabled",
            material=None if origin == "EXTERNAL" else os.urandom(32),
        )
        self.keys[key.key_id] = key
        return {"KeyMetadata": self._metadata(key)}

    def op_DescribeKey(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"KeyMetadata": self._metadata(self._key(request))}

    def op_GetParametersForImport(self, request: dict[str, Any]) -> dict[str, Any]:
        key = self._key(request)
        if key.origin != "EXTERNAL":
            raise KmsError(
                "UnsupportedOperationException",
                f"{key.arn()} origin is {key.origin} which is not valid for this operation.",
            )
        algorithm = request.get("WrappingAlgorithm")
        size = _SIZES.get(str(request.get("WrappingKeySpec")))
        if algorithm not in WRAPPING_ALGORITHMS or size is None:
            raise KmsError(
                "ValidationException", "1 validation error detected: WrappingAlgorithm or WrappingKeySpec"
            )
        private = self._wrapping_key(size)
        token = os.urandom(64)
        valid_to = self.now() + 24 * 3600
        key.tokens[token] = (private, str(algorithm), valid_to)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "KeyId": key.arn(),
            "ImportToken": _b64(token),
            "PublicKey": _b64(public),
            "ParametersValidTo": valid_to,
        }

    def op_ImportKeyMaterial(self, request: dict[str, Any]) -> dict[str, Any]:
        key = self._key(request)
        token = _unb64(request.get("ImportToken"), "ImportToken")
        found = key.tokens.get(token)
        if found is None or found[2] < self.now():
            raise KmsError("InvalidImportTokenException", "The import token is invalid for this key")
        private, algorithm, _ = found
        material = self._decrypt_material(
            private, algorithm, _unb64(request.get("EncryptedKeyMaterial"), "EncryptedKeyMaterial")
        )
        if len(material) != 32:
            raise KmsError("IncorrectKeyMaterialException", "SYMMETRIC_DEFAULT key material must be 256 bits")
        digest = hashlib.sha256(material).digest()
        if key.first_material_digest is not None and not hmac.compare_digest(
            digest, key.first_material_digest
        ):
            raise KmsError(
                "IncorrectKeyMaterialException", "The key material is not the material previously imported"
            )
        model = request.get("ExpirationModel", "KEY_MATERIAL_EXPIRES")
        valid_to = request.get("ValidTo")
        if model == "KEY_MATERIAL_EXPIRES" and valid_to is None:
            raise KmsError(
                "ValidationException", "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES"
            )
        if model == "KEY_MATERIAL_DOES_NOT_EXPIRE" and valid_to is not None:
            raise KmsError("ValidationException", "ValidTo must not be set when the material does not expire")
        if valid_to is not None and float(valid_to) <= self.now():
            raise KmsError("ValidationException", "ValidTo must be in the future")
        key.material, key.first_material_digest = material, digest
        key.valid_to = None if valid_to is None else float(valid_to)
        key.expiration_model, key.state = model, "Enabled"
        del key.tokens[token]
        return {}

    def _wrapping_key(self, size: int) -> rsa.RSAPrivateKey:
        """One key pair per size for the server's life (AWS makes one per call; RSA-4096 keygen
        costs seconds on a loaded 2-core box, and each token still binds its own key and expiry)."""
        if size not in self._wrapping_keys:
            self._wrapping_keys[size] = rsa.generate_private_key(public_exponent=65537, key_size=size)
        return self._wrapping_keys[size]

    @staticmethod
    def _decrypt_material(private: rsa.RSAPrivateKey, algorithm: str, encrypted: bytes) -> bytes:
        digest = hashes.SHA1() if algorithm == "RSAES_OAEP_SHA_1" else hashes.SHA256()
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
        size = private.key_size // 8
        try:
            if algorithm != "RSA_AES_KEY_WRAP_SHA_256":
                return private.decrypt(encrypted, oaep)
            ephemeral = private.decrypt(encrypted[:size], oaep)
            return aes_key_unwrap_with_padding(ephemeral, encrypted[size:])
        except (ValueError, InvalidUnwrap):
            raise KmsError(
                "InvalidCiphertextException", "The encrypted key material could not be decrypted"
            ) from None

    def op_DeleteImportedKeyMaterial(self, request: dict[str, Any]) -> dict[str, Any]:
        key = self._key(request)
        if key.origin != "EXTERNAL":
            raise KmsError("UnsupportedOperationException", "only keys with imported material")
        key.material, key.state, key.valid_to, key.expiration_model = None, "PendingImport", None, None
        return {}

    # -- crypto ----------------------------------------------------------------------------------

    def _usable(self, key: _Key) -> bytes:
        if key.state != "Enabled" or key.material is None:
            raise KmsError("KMSInvalidStateException", f"{key.arn()} is {key.state}.")
        return key.material

    @staticmethod
    def _aad(request: dict[str, Any]) -> bytes:
        return json.dumps(request.get("EncryptionContext") or {}, sort_keys=True).encode()

    def op_Encrypt(self, request: dict[str, Any]) -> dict[str, Any]:
        key = self._key(request)
        material = self._usable(key)
        iv = os.urandom(12)
        sealed = AESGCM(material).encrypt(
            iv, _unb64(request.get("Plaintext"), "Plaintext"), self._aad(request)
        )
        blob = uuid.UUID(key.key_id).bytes + iv + sealed
        return {"CiphertextBlob": _b64(blob), "KeyId": key.arn(), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    def op_Decrypt(self, request: dict[str, Any]) -> dict[str, Any]:
        blob = _unb64(request.get("CiphertextBlob"), "CiphertextBlob")
        if len(blob) < 16 + 12 + 16:
            raise KmsError("InvalidCiphertextException", "")
        key = self._key({"KeyId": request.get("KeyId") or str(uuid.UUID(bytes=blob[:16]))})
        material = self._usable(key)
        try:
            plaintext = AESGCM(material).decrypt(blob[16:28], blob[28:], self._aad(request))
        except InvalidTag:
            raise KmsError("InvalidCiphertextException", "") from None
        return {"Plaintext": _b64(plaintext), "KeyId": key.arn(), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
