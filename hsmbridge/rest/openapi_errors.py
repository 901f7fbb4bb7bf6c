"""Document the error answers every route can give in ``/openapi.json``, in its dialect's body
(Key Protect under ``/api/v2/``, Huawei KMS under ``/v1.0/``).

FastAPI documents a 422 with its own validation-error body for every route that has parameters,
and nothing else; the facade never answers that body (validation failures are 400 with Key
Protect's error body, and 422 is Key Protect's "ciphertext is invalid"). A client generated from
the schema, or schemathesis, would then call every 400/401/404/409/413/429/503 undocumented and
every real 422 a schema violation. So each operation lists the statuses any route may answer
(the gate, the request guards and the store can refuse any request), all with the one error body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA_NAME = "KeyProtectError"
KEY_PROTECT_PREFIX = "/api/v2/"

#: status → description; the gate (401, 429), the request guards (400, 413), the store and the
#: HSM (503) and the mapping of bugs (500) apply to every route, the rest to most of them.
ERROR_STATUSES = {
    "400": "Bad Request: the request is malformed",
    "401": "Unauthorized: missing or invalid credentials, or the action is not granted",
    "404": "Not Found",
    "409": "Conflict: the resource's state does not allow this now",
    "410": "Gone: the key was deleted",
    "413": "Content Too Large: the body is over the configured limit",
    "422": "Unprocessable: the ciphertext or key version is not valid",
    "429": "Too Many Requests: retry after the Retry-After header's seconds",
    "500": "Internal Server Error",
    "501": "Not Implemented on this server or HSM",
    "503": "Service Unavailable: the HSM or the store cannot serve now; retry after Retry-After",
}

_ERROR_SCHEMA: dict[str, Any] = {
    "title": ERROR_SCHEMA_NAME,
    "type": "object",
    "required": ["metadata", "resources"],
    "properties": {
        "metadata": {
            "type": "object",
            "required": ["collectionType", "collectionTotal"],
            "properties": {
                "collectionType": {"type": "string", "enum": ["application/vnd.ibm.kms.error+json"]},
                "collectionTotal": {"type": "integer"},
            },
        },
        "resources": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["errorMsg"],
                "properties": {
                    "errorMsg": {"type": "string"},
                    "reasons": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["code", "message", "status"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "status": {"type": "integer"},
                                "moreInfo": {"type": "string"},
                                "target": {"type": "object"},
                            },
                        },
                    },
                },
            },
        },
    },
}


#: Huawei Cloud KMS's error body (hsmbridge/huawei/errors.py) and the statuses it answers.
HUAWEI_ERROR_SCHEMA_NAME = "HuaweiKmsError"
HUAWEI_PREFIX = "/v1.0/"
_HUAWEI_ERROR_SCHEMA: dict[str, Any] = {
    "title": HUAWEI_ERROR_SCHEMA_NAME,
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["error_code", "error_msg"],
            "properties": {"error_code": {"type": "string"}, "error_msg": {"type": "string"}},
        }
    },
}
HUAWEI_ERROR_STATUSES = {
    "400": "Bad Request: invalid parameter (KMS.02xx, KMS.03xx ...)",
    "401": "Unauthorized: the signature or token was not accepted",
    "403": "Forbidden: the role or project does not allow this",
    "404": "Not Found: no such key",
    "413": "Content Too Large: the body is over the configured limit",
    "429": "Too Many Requests",
    "500": "Internal Server Error",
    "502": "Abnormal KMS I/O: the HSM or the store cannot serve now",
}

#: (path prefix, error schema name, schema, statuses): each dialect documents its own errors.
_DIALECTS = (
    (KEY_PROTECT_PREFIX, ERROR_SCHEMA_NAME, _ERROR_SCHEMA, ERROR_STATUSES),
    (HUAWEI_PREFIX, HUAWEI_ERROR_SCHEMA_NAME, _HUAWEI_ERROR_SCHEMA, HUAWEI_ERROR_STATUSES),
)


def _error_response(description: str, schema_name: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema_name}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (FastAPI's generated OpenAPI) with the error answers on every operation."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for path, item in schema.get("paths", {}).items():
        dialect = next((d for d in _DIALECTS if path.startswith(d[0])), None)
        if dialect is None:
            continue
        _, name, error_schema, statuses = dialect
        schemas[name] = error_schema
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, description in statuses.items():
                responses[status] = _error_response(description, name)
            if "422" not in statuses:
                responses.pop("422", None)  # FastAPI's validation body: this dialect never sends it
            if method == "head":  # HEAD answers carry headers only, never a body or its type
                for response in responses.values():
                    response.pop("content", None)
    # FastAPI's validation-error body is never sent: drop it so nobody codes against it.
    if "HTTPValidationError" not in str(schema.get("paths", {})):
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
