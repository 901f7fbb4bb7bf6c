"""The request tables of the security matrices: one case per REST endpoint (E6 once per
``?action=``) and one per RPC (SetKeyState per target state, CryptoStream per message kind), each
with a request a client would send, driven by `security.authz.ENDPOINTS` and `RPC_ACTIONS` so an
endpoint or RPC added without a case fails the suite (a KeyError while building the tables).

Shared by the role matrices and the cross-tenant matrices.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
from security_support import ERROR_TYPE, UNAUTHORIZED, Caller, Stack, Stubs, b64, key_body

from hsmbridge.security.authz import (
    ACTIONS,
    DEPRECATED_KEY_ACTIONS,
    ENDPOINTS,
    RPC_ACTIONS,
    Action,
    Endpoint,
    rpc_action,
)
from hsmbridge.v1 import crypto_pb2, hsm_pb2, import_tokens_pb2, keys_pb2
from hsmbridge.v1 import push_pb2 as P


def allowed(caller: Caller, action: Action) -> bool:
    """The expected decision, from the action's documented minimum role (not from `Authorizer`)."""
    if action.key_purge:
        return caller.key_purge
    return action.min_role is not None and caller.top_role >= action.min_role


# --- REST -------------------------------------------------------------------------------------------

CRN = "crn:v1:bluemix:public:cloud-object-storage:global:a/00000000000000000000000000000000:feddecaf::bucket"
POLICY = "application/vnd.ibm.kms.policy+json"
UNAUTHORIZED_BODY = {
    "metadata": {"collectionType": ERROR_TYPE, "collectionTotal": 1},
    "resources": [{"errorMsg": UNAUTHORIZED}],
}


def _collection(kind: str, *resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"collectionType": kind, "collectionTotal": len(resources)},
        "resources": list(resources),
    }


def _registration() -> dict[str, Any]:
    return _collection("application/vnd.ibm.kms.registration_input+json", {"preventKeyDeletion": False})


#: Per spec endpoint: (query string, JSON body or None); the body "CIPHERTEXT" stands for
#: ``{"ciphertext": <a real ciphertext of the case's key>}``. Bodies are what a client would send;
#: for E27 it is deliberately out of range (400 before an RSA keygen: the matrix proves
#: authorisation, the audit-flow test creates real tokens).
BODIES: dict[str, tuple[str, Any]] = {
    "E1": ("", key_body("matrix-created")),
    "E2": ("", None),
    "E3": ("", None),
    "E4": ("", key_body("matrix-overrides", dualAuthDelete={"enabled": False})),
    "E5": ("", None),
    "E6": ("", None),  # per ?action=, see ACTION_BODIES
    "E7": ("", {"keyRingID": "default"}),
    "E8": ("", None),
    "E9": ("", None),
    "E10": ("", None),
    "E11": ("", None),
    "E12": ("", None),
    "E13": ("", {}),
    "E14": ("", "CIPHERTEXT"),
    "E15": ("", "CIPHERTEXT"),
    "E16": ("", None),
    "E17": ("", None),
    "E18": ("", None),
    "E19": ("", None),
    "E20": ("", None),
    "E21": ("", None),
    "E22": ("", _collection(POLICY, {"type": POLICY, "rotation": {"enabled": True, "interval_month": 3}})),
    "E23": ("", None),
    "E24": ("", _collection(POLICY, {"policy_type": "dualAuthDelete", "policy_data": {"enabled": False}})),
    "E25": ("", None),
    "E26": ("", None),
    "E27": ("", {"expiration": 1}),
    "E28": ("", None),
    "E29": ("", _registration()),
    "E30": ("", _registration()),
    "E31": ("", _registration()),
    "E32": ("", None),
    "E33": (
        "?action=deactivate",
        _collection("application/vnd.ibm.kms.crn+json", {"resourceCrn": CRN}),
    ),
    "E34": ("", None),
    "E35": ("", None),
    "E36": (
        "",
        _collection(
            "application/vnd.ibm.kms.event_acknowledge+json",
            {
                "eventId": "f2bd5ba6-0000-4000-8000-000000000001",
                "adopterKeyState": "DEK_ENABLED",
                "timestamp": "2026-01-01T00:00:00Z",
            },
        ),
    ),
    "E37": ("", None),
    "E38": ("", None),
    "E39": ("", None),
    "E40": ("", None),
    "E41": ("", None),
}
ACTION_BODIES: dict[str, Any] = {"wrap": {}, "unwrap": "CIPHERTEXT", "rewrap": "CIPHERTEXT"}


@dataclass(frozen=True)
class RestCase:
    endpoint: Endpoint
    action: Action
    query: str
    body: Any

    @property
    def id(self) -> str:
        return f"{self.endpoint.number}{self.query}"

    @property
    def needs_key(self) -> bool:
        return "{id}" in self.endpoint.path

    def path(self, key_id: str | None) -> str:
        path = self.endpoint.path
        for name, value in (
            ("{id}", key_id or ""),
            ("{crn:path}", quote(CRN, safe="")),
            ("{alias}", "matrix-alias"),
            ("{key_ring_id}", "matrix-ring"),
        ):
            path = path.replace(name, value)
        return path + self.query


def _rest_cases() -> list[RestCase]:
    cases = []
    for endpoint in ENDPOINTS:
        query, body = BODIES[endpoint.number]  # a KeyError here: a new endpoint needs a case
        if endpoint.action is None:
            for value, name in DEPRECATED_KEY_ACTIONS.items():
                cases.append(RestCase(endpoint, ACTIONS[name], f"?action={value}", ACTION_BODIES.get(value)))
        else:
            cases.append(RestCase(endpoint, ACTIONS[endpoint.action], query, body))
    return cases


REST_CASES = _rest_cases()


def prepare_rest(stack: Stack, case: RestCase) -> tuple[str, Any]:
    """The concrete path and body of a case: a fresh key of instance A for key endpoints (and a
    real ciphertext of it where the body needs one)."""
    if not case.needs_key:
        return case.path(None), case.body
    key = stack.new_key()
    body = case.body
    if body == "CIPHERTEXT":
        body = {"ciphertext": b64(stack.services.envelopes.wrap(stack.ctx(), key.id, None).ciphertext)}
    return case.path(key.id), body


def send(rest: Any, case: RestCase, path: str, body: Any, headers: dict[str, str]) -> Any:
    return rest.request(case.endpoint.method, path, json=body, headers=headers)


# --- gRPC -------------------------------------------------------------------------------------------

SERVICE = "/hsmbridge.v1."


@dataclass(frozen=True)
class RpcCase:
    method: str  # full gRPC method name
    variant: str
    #: (key id, ciphertext of that key) → the request (an iterator of messages for the stream)
    build: Callable[[str, bytes], Any]

    @property
    def id(self) -> str:
        return self.method.removeprefix(SERVICE) + (f"[{self.variant}]" if self.variant else "")

    @property
    def name(self) -> str:
        return self.method.rsplit("/", 1)[1]

    @property
    def stub_attr(self) -> str:
        return {
            "KeyService": "keys",
            "CryptoService": "crypto",
            "ImportTokenService": "tokens",
            "HsmService": "hsm",
            "PushService": "push",
        }[self.method.removeprefix(SERVICE).split("/")[0]]

    @property
    def streaming(self) -> bool:
        return self.name == "CryptoStream"

    @property
    def action(self) -> Action:
        request = self.build("k", b"c")
        if self.streaming:
            request = next(iter(request))
        return rpc_action(self.method, request)

    def call(self, stubs: Stubs, key_id: str, ciphertext: bytes, metadata: Any) -> Any:
        rpc = getattr(getattr(stubs, self.stub_attr), self.name)
        request = self.build(key_id, ciphertext)
        if self.streaming:
            return list(rpc(request, metadata=metadata, timeout=30))
        return rpc(request, metadata=metadata, timeout=30)


def _stream(**batch: Any) -> Callable[[str, bytes], Iterator[crypto_pb2.CryptoStreamRequest]]:
    def build(key_id: str, ciphertext: bytes) -> Iterator[crypto_pb2.CryptoStreamRequest]:
        kind, make = next(iter(batch.items()))
        return iter([crypto_pb2.CryptoStreamRequest(sequence=1, **{kind: make(key_id, ciphertext)})])

    return build


K = keys_pb2
C = crypto_pb2
#: Per RPC: the variants and their requests. Rotation and import use plain material; the import
#: token RPC asks for a key size the server refuses (400 before an RSA keygen: the matrix proves
#: authorisation, the audit-flow test creates real tokens).
REQUESTS: dict[str, dict[str, Callable[[str, bytes], Any]]] = {
    "KeyService/CreateKey": {"": lambda k, c: K.CreateKeyRequest(name="grpc-matrix")},
    "KeyService/ImportKey": {
        "": lambda k, c: K.ImportKeyRequest(
            key=K.CreateKeyRequest(name="grpc-imported"), material=K.KeyMaterial(plaintext=os.urandom(32))
        )
    },
    "KeyService/GetKey": {"": lambda k, c: K.GetKeyRequest(key_id=k)},
    "KeyService/GetKeyPayload": {"": lambda k, c: K.GetKeyPayloadRequest(key_id=k)},
    "KeyService/ListKeys": {"": lambda k, c: K.ListKeysRequest()},
    "KeyService/RotateKey": {"": lambda k, c: K.RotateKeyRequest(key_id=k)},
    "KeyService/SetKeyState": {
        "disable": lambda k, c: K.SetKeyStateRequest(key_id=k, state=K.KEY_STATE_SUSPENDED),
        "enable": lambda k, c: K.SetKeyStateRequest(key_id=k, state=K.KEY_STATE_ACTIVE),
    },
    "KeyService/DeleteKey": {"": lambda k, c: K.DeleteKeyRequest(key_id=k)},
    "KeyService/ListKeyVersions": {"": lambda k, c: K.ListKeyVersionsRequest(key_id=k)},
    "CryptoService/Wrap": {"": lambda k, c: C.WrapRequest(key_id=k)},
    "CryptoService/Unwrap": {"": lambda k, c: C.UnwrapRequest(key_id=k, ciphertext=c)},
    "CryptoService/Rewrap": {"": lambda k, c: C.RewrapRequest(key_id=k, ciphertext=c)},
    "CryptoService/WrapBatch": {"": lambda k, c: C.WrapBatchRequest(key_id=k, items=[C.WrapRequest()])},
    "CryptoService/UnwrapBatch": {
        "": lambda k, c: C.UnwrapBatchRequest(key_id=k, items=[C.UnwrapRequest(ciphertext=c)])
    },
    "CryptoService/RewrapBatch": {
        "": lambda k, c: C.RewrapBatchRequest(key_id=k, items=[C.RewrapRequest(ciphertext=c)])
    },
    "CryptoService/CryptoStream": {
        "wrap": _stream(wrap=lambda k, c: C.WrapBatchRequest(key_id=k, items=[C.WrapRequest()])),
        "unwrap": _stream(
            unwrap=lambda k, c: C.UnwrapBatchRequest(key_id=k, items=[C.UnwrapRequest(ciphertext=c)])
        ),
        "rewrap": _stream(
            rewrap=lambda k, c: C.RewrapBatchRequest(key_id=k, items=[C.RewrapRequest(ciphertext=c)])
        ),
    },
    "ImportTokenService/CreateImportToken": {
        "": lambda k, c: import_tokens_pb2.CreateImportTokenRequest(key_bits=1000)
    },
    "ImportTokenService/GetImportToken": {"": lambda k, c: import_tokens_pb2.GetImportTokenRequest()},
    "HsmService/GetHsmInfo": {"": lambda k, c: hsm_pb2.GetHsmInfoRequest()},
    # `k` is a Key Protect-style key (no external record): allowed callers get NOT_FOUND before any
    # RSA keygen or import work; creating an external key is cheap
    "KeyService/CreateExternalKey": {
        "": lambda k, c: K.CreateExternalKeyRequest(alias=f"grpc-{os.urandom(4).hex()}")
    },
    "KeyService/ImportKeyMaterial": {
        "": lambda k, c: K.ImportKeyMaterialRequest(
            key_id=k, import_token="x" * 200, encrypted_key_material=b"x"
        )
    },
    "KeyService/DeleteKeyMaterial": {"": lambda k, c: K.DeleteKeyMaterialRequest(key_id=k)},
    "ImportTokenService/GetImportParameters": {
        "": lambda k, c: import_tokens_pb2.GetImportParametersRequest(key_id=k)
    },
    # cloud push: requests the handler answers without any cloud (not found, or invalid)
    "PushService/CreateConnection": {"": lambda k, c: P.CreateConnectionRequest(name="matrix", cloud="aws")},
    "PushService/ListConnections": {"": lambda k, c: P.ListConnectionsRequest()},
    "PushService/GetConnection": {"": lambda k, c: P.GetConnectionRequest(connection="matrix-none")},
    "PushService/DeleteConnection": {"": lambda k, c: P.DeleteConnectionRequest(connection="matrix-none")},
    "PushService/TestConnection": {"": lambda k, c: P.TestConnectionRequest(connection="matrix-none")},
    "PushService/CreateCloudKey": {
        "": lambda k, c: P.CreateCloudKeyRequest(cloud="aws", connection="matrix-none")
    },
    "PushService/ListCloudKeys": {"": lambda k, c: P.ListCloudKeysRequest(cloud="aws")},
    "PushService/GetCloudKey": {"": lambda k, c: P.GetCloudKeyRequest(cloud="aws", id="matrix-none")},
    "PushService/DeleteCloudKey": {"": lambda k, c: P.DeleteCloudKeyRequest(cloud="aws", id="matrix-none")},
    "PushService/ImportMaterial": {"": lambda k, c: P.ImportMaterialRequest(cloud="aws", id="matrix-none")},
}


def _rpc_cases() -> list[RpcCase]:
    cases = []
    for method in RPC_ACTIONS:
        variants = REQUESTS[method.removeprefix(SERVICE)]  # a KeyError here: a new RPC needs a case
        cases.extend(RpcCase(method, variant, build) for variant, build in variants.items())
    return cases


RPC_CASES = _rpc_cases()
NEVER_FROM_ALLOWED = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def prepare_rpc(stack: Stack, case: RpcCase | None = None) -> tuple[str, bytes]:
    """A fresh key of instance A and a ciphertext of it. GetKeyPayload gets a standard key: a
    root key's payload is refused by the core (with PERMISSION_DENIED, see the report) whatever
    the caller's role, which would hide the authorisation decision under test."""
    if case is not None and case.name == "GetKeyPayload":
        return stack.new_key(name="grpc-matrix-standard", extractable=True).id, b""
    key = stack.new_key(name="grpc-matrix-key")
    return key.id, stack.services.envelopes.wrap(stack.ctx(), key.id, None).ciphertext
