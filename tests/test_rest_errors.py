"""Domain errors → Key Protect error responses (spec §1.5–§1.7, §8)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsmbridge.errors import (
    AlreadyExists,
    Conflict,
    Gone,
    HsmBridgeError,
    HsmUnavailable,
    IntegrityError,
    InternalError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    TooEarly,
    Unauthenticated,
    Unsupported,
)
from hsmbridge.rest.errors import (
    INTERNAL_ERROR_MSG,
    MORE_INFO,
    REASON_TABLE,
    TOO_MANY_REQUESTS_MSG,
    UNAUTHORIZED_MSG,
    UNAVAILABLE_MSG,
    Operation,
    Operations,
    bad_body,
    invalid_field,
    invalid_param,
    missing_field,
    no_body,
    to_http_error,
    with_kp_code,
)

ERROR_METADATA = {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1}


def only_resource(body: dict) -> dict:
    assert body["metadata"] == ERROR_METADATA
    assert len(body["resources"]) == 1
    return body["resources"][0]


def reason_of(exc: BaseException, operation: Operation = Operations.GET_KEY) -> tuple[int, dict]:
    status, body = to_http_error(exc, operation)
    resource = only_resource(body)
    assert len(resource["reasons"]) == 1
    return status, resource["reasons"][0]


# --- §1.6: the envelope, verbatim ----------------------------------------------------------------


def test_seed_error_example_is_reproduced_exactly() -> None:
    exc = Conflict("Key is not active", reason=Reason.INVALID_STATE, target="plaintext")
    status, body = to_http_error(exc, Operation("Wrap with key", "performed"))
    assert status == 409
    assert body == {
        "metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},
        "resources": [
            {
                "errorMsg": "Conflict: Wrap with key could not be performed. See 'reasons' for more details.",
                "reasons": [
                    {
                        "code": "KEY_ACTION_INVALID_STATE_ERR",
                        "message": "Key is not in a valid state.",
                        "status": 409,
                        "moreInfo": "https://cloud.ibm.com/apidocs/key-protect",
                        "target": {"type": "field", "name": "plaintext"},
                    }
                ],
            }
        ],
    }


def test_target_is_omitted_when_the_error_names_no_field() -> None:
    _, reason = reason_of(NotFound("no such key", reason=Reason.KEY_NOT_FOUND))
    assert "target" not in reason
    assert reason["moreInfo"] == MORE_INFO


@pytest.mark.parametrize(
    ("exc", "operation", "error_msg"),
    [
        (
            NotFound("gone missing", reason=Reason.KEY_NOT_FOUND),
            Operations.RESTORE_KEY,
            "Not Found: Key could not be restored. See 'reasons' for more details.",
        ),
        (
            # E16 prints the generic form for these (E28 and E8 print sentences: test_rest_messages)
            Conflict("expired", reason=Reason.IMPORT_TOKEN_EXPIRED),
            Operations.ROTATE,
            "Conflict: Key could not be rotated. See 'reasons' for more details.",
        ),
        (
            Gone("deleted"),
            Operations.ROTATE,
            "Gone: Key could not be rotated. See 'reasons' for more details.",
        ),
        (
            Conflict(
                "1 prior authorization(s) are required for deletion", reason=Reason.AUTHORIZATIONS_NOT_MET
            ),
            Operations.DELETE_KEY,
            "Conflict: 1 prior authorization(s) are required for deletion: Key could not be deleted. "
            "See 'reasons' for more details.",
        ),
        (
            Conflict("no policy", reason=Reason.NOT_DUAL_AUTH),
            Operations.SET_KEY_FOR_DELETION,
            "Conflict: Key deletion could not be scheduled. See 'reasons' for more details.",
        ),
        (
            InvalidInput("The key expired on 2020-08-14 19:33:47 +0000 UTC", reason=Reason.KEY_EXPIRED),
            Operations.RESTORE_KEY,
            "Bad Request: The key expired on 2020-08-14 19:33:47 +0000 UTC: Key could not be restored. "
            "See 'reasons' for more details.",
        ),
    ],
)
def test_error_msg_follows_the_seed_convention(
    exc: HsmBridgeError, operation: Operation, error_msg: str
) -> None:
    _, body = to_http_error(exc, operation)
    assert only_resource(body)["errorMsg"] == error_msg


# --- §1.7: the reason-code catalogue ------------------------------------------------------------


def test_every_reason_has_a_wire_spec() -> None:
    assert set(REASON_TABLE) == set(Reason)


@pytest.mark.parametrize(
    ("exc", "status", "code", "message"),
    [
        (NotFound("x", reason=Reason.KEY_NOT_FOUND), 404, "KEY_NOT_FOUND_ERR", "Key does not exist"),
        (NotFound("x", reason=Reason.ALIAS_NOT_FOUND), 404, "ALIAS_NOT_FOUND_ERR", "Alias does not exist"),
        (NotFound("x", reason=Reason.KEY_RING_NOT_FOUND), 404, "KEY_RING_NOT_FOUND_ERR", None),
        (NotFound("x", reason=Reason.IMPORT_TOKEN_NOT_FOUND), 404, "IMPORT_TOKEN_NOT_FOUND_ERR", None),
        (NotFound("x", reason=Reason.REGISTRATION_NOT_FOUND), 404, "REGISTRATION_NOT_FOUND_ERR", None),
        (
            Gone("x"),
            410,
            "KEY_DELETED_ERR",
            "Key has already been deleted. Delete references to this key.",
        ),
        (
            Conflict("x", reason=Reason.INVALID_STATE),
            409,
            "KEY_ACTION_INVALID_STATE_ERR",
            "Key is not in a valid state.",
        ),
        (
            IntegrityError("GCM tag mismatch under version 3"),
            422,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
            "The provided ciphertext is invalid or corrupted.",
        ),
        (
            TooEarly("x", reason=Reason.ROTATION_TOO_SOON),
            409,
            "KEY_ROTATION_NOT_PERMITTED",
            "This root key has been rotated within the last hour: "
            "Only one 'rotate' action per hour is permitted",
        ),
        (
            TooEarly("Restoring a key is only allowed when 30 seconds after key is deleted has passed."),
            409,
            "REQ_TOO_EARLY_ERR",
            "Restoring a key is only allowed when 30 seconds after key is deleted has passed.",
        ),
        (Conflict("x", reason=Reason.IMPORT_TOKEN_EXPIRED), 409, "IMPORT_TOKEN_EXPIRED_ERR", None),
        (InvalidInput("x", reason=Reason.INCORRECT_NONCE), 400, "INCORRECT_NONCE_ERR", None),
        (InvalidInput("x", reason=Reason.INCORRECT_NONCE_IV), 400, "INCORRECT_NONCE_IV_ERR", None),
        (
            InvalidInput("x", reason=Reason.KEY_ROOT_REQUIRED),
            400,
            "KEY_ROOT_REQ_ERR",
            "Requested action can only be completed with a root key.",
        ),
        (InvalidInput("x", reason=Reason.KEY_PAYLOAD_REQUIRED), 400, "KEY_PAYLOAD_REQ_ERR", None),
        (InvalidInput("x", reason=Reason.KEY_RESTORE_EXPIRED), 400, "KEY_RESTORE_EXPIRED", None),
        (InvalidInput("x", reason=Reason.KEY_EXPIRED), 400, "KEY_EXPIRED_ERR", None),
        (Conflict("x", reason=Reason.ALIAS_NOT_UNIQUE), 409, "KEY_ALIAS_NOT_UNIQUE_ERR", None),
        (Conflict("x", reason=Reason.ALIAS_QUOTA), 409, "KEY_ALIAS_QUOTA_ERR", None),
        (Conflict("x", reason=Reason.KEY_RING_QUOTA), 409, "KEY_RING_RESOURCE_QUOTA_ERR", None),
        (Conflict("x", reason=Reason.KEY_RING_NOT_EMPTY), 409, "KEY_RING_NOT_EMPTY_ERR", None),
        (Conflict("x", reason=Reason.KEY_RING_KEYS_NOT_DELETED), 409, "KEY_RING_KEYS_NOT_DELETED_ERR", None),
        (Conflict("x", reason=Reason.AUTHORIZATIONS_NOT_MET), 409, "AUTHORIZATIONS_NOT_MET", None),
        (Conflict("x", reason=Reason.NOT_DUAL_AUTH), 409, "NOT_DUAL_AUTH_ERR", None),
        (Conflict("x", reason=Reason.PROTECTED_RESOURCE), 409, "PROTECTED_RESOURCE_ERR", None),
        (Conflict("x", reason=Reason.PREVENT_KEY_DELETION), 409, "PREV_KEY_DEL_ERR", None),
        (Conflict("x", reason=Reason.KEY_CREATE_IMPORT_ACCESS), 409, "KEY_CREATE_IMPORT_ACCESS_ERR", None),
        (Conflict("x", reason=Reason.CONCURRENT_UPDATE), 409, "REQ_TOO_EARLY_ERR", None),
        (InvalidInput("x", reason=Reason.BAD_BODY), 400, "BAD_BODY_ERR", "x"),
    ],
)
def test_reason_codes_and_statuses(exc: HsmBridgeError, status: int, code: str, message: str | None) -> None:
    got_status, reason = reason_of(exc)
    assert (got_status, reason["code"], reason["status"]) == (status, code, status)
    if message is not None:
        assert reason["message"] == message


def test_field_errors_use_key_protects_sentences_and_name_the_target() -> None:
    exc = invalid_field("plaintext", "a base64 encoded key material")
    status, body = to_http_error(exc, Operations.WRAP)
    resource = only_resource(body)
    assert status == 400
    assert (
        resource["errorMsg"]
        == "Bad Request: Wrap with key could not be performed. See 'reasons' for more details."
    )
    assert resource["reasons"][0] == {
        "code": "INVALID_FIELD_ERR",
        "message": "The field 'plaintext' must be: a base64 encoded key material",
        "status": 400,
        "moreInfo": MORE_INFO,
        "target": {"type": "field", "name": "plaintext"},
    }


def test_missing_field() -> None:
    _, reason = reason_of(missing_field("ciphertext"), Operations.UNWRAP)
    assert reason["code"] == "MISSING_FIELD_ERR"
    assert reason["message"] == "The field 'ciphertext' is required."
    assert reason["target"] == {"type": "field", "name": "ciphertext"}


def test_query_parameter_errors_are_invalid_param_with_a_param_target() -> None:
    _, reason = reason_of(invalid_param("limit", "an integer between 1 and 5000"), Operations.LIST_KEYS)
    assert reason["code"] == "INVALID_PARAM_ERR"
    assert reason["message"] == "The param 'limit' must be: an integer between 1 and 5000"
    assert reason["target"] == {"type": "param", "name": "limit"}


def test_path_param_errors() -> None:
    exc = invalid_field("alias", "alphanumeric", target_type="path_param")
    _, reason = reason_of(exc, Operations.CREATE_ALIAS)
    assert reason["code"] == "INVALID_PATH_PARAM_ERR"
    assert reason["target"] == {"type": "path_param", "name": "alias"}


def test_generic_invalid_input_with_a_target_is_a_field_error() -> None:
    _, reason = reason_of(InvalidInput("The field 'name' must be: 2 to 90 characters", target="name"))
    assert reason["code"] == "INVALID_FIELD_ERR"
    assert reason["message"] == "The field 'name' must be: 2 to 90 characters"


def test_generic_invalid_input_without_a_target_carries_errormsg_only() -> None:
    status, body = to_http_error(InvalidInput("The request is malformed"), Operations.CREATE_KEY)
    assert status == 400
    assert only_resource(body) == {
        "errorMsg": "Bad Request: The request is malformed: Key could not be created."
    }


def test_bad_body_and_no_body_helpers() -> None:
    _, reason = reason_of(bad_body("CollectionMetadata is empty"), Operations.CREATE_KEY)
    assert reason["code"] == "BAD_BODY_ERR"
    assert reason["message"] == (
        "Invalid body data was passed. Please ensure the data passed had valid formatting with no "
        "invalid characters: CollectionMetadata is empty"
    )
    _, reason = reason_of(no_body(), Operations.UNWRAP)
    assert (reason["code"], reason["message"], reason["status"]) == (
        "NO_BODY_ERR",
        "Missing body in request",
        400,
    )


def test_key_protect_only_codes_travel_in_metadata() -> None:
    exc = with_kp_code(NotFound("Instance does not exist"), "INSTANCE_NOT_FOUND_ERR")
    status, reason = reason_of(exc, Operations.CREATE_KEY)
    assert (status, reason["code"], reason["message"]) == (
        404,
        "INSTANCE_NOT_FOUND_ERR",
        "Instance does not exist",
    )


# --- statuses without reasons: 401, 429, 5xx ----------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "error_msg"),
    [
        (Unauthenticated("token expired at 12:00"), 401, UNAUTHORIZED_MSG),
        (PermissionDenied("lacks kms.secrets.purge"), 401, UNAUTHORIZED_MSG),
        (ResourceExhausted("5 req/s", reason=Reason.RATE_LIMITED), 429, TOO_MANY_REQUESTS_MSG),
        (ResourceExhausted("pool"), 429, TOO_MANY_REQUESTS_MSG),
        (InternalError("invariant broken in store row 42"), 500, INTERNAL_ERROR_MSG),
        (HsmBridgeError("unclassified"), 500, INTERNAL_ERROR_MSG),
    ],
)
def test_simple_errors_carry_the_canonical_errormsg_only(
    exc: HsmBridgeError, status: int, error_msg: str
) -> None:
    got_status, body = to_http_error(exc, Operations.WRAP)
    assert got_status == status
    assert only_resource(body) == {"errorMsg": error_msg}


def test_canonical_strings_match_the_seed_table() -> None:
    assert UNAUTHORIZED_MSG == "Unauthorized: The user does not have access to the specified resource."
    assert TOO_MANY_REQUESTS_MSG == "Too Many Requests: Wait a few minutes and try again."
    assert INTERNAL_ERROR_MSG == (
        "Internal Server Error: IBM Key Protect is currently unavailable. "
        "Your request could not be processed. Try again later."
    )


def test_hsm_unavailable_is_a_retryable_503() -> None:
    status, body = to_http_error(HsmUnavailable("CKR_DEVICE_ERROR on slot 0"), Operations.WRAP)
    assert status == 503
    message = only_resource(body)["errorMsg"]
    assert message.startswith("Service Unavailable: ")
    assert "CKR" not in message
    (reason,) = only_resource(body)["reasons"]  # machine-readable: an outage, not a bug
    assert (reason["code"], reason["status"]) == ("HSM_UNAVAILABLE_ERR", 503)
    assert "CKR" not in reason["message"]


def test_unsupported_is_a_non_retryable_501() -> None:
    status, body = to_http_error(Unsupported("KMIP is not implemented"), Operations.KEY_ACTION)
    assert status == 501
    assert only_resource(body) == {
        "errorMsg": "Not Implemented: KMIP is not implemented: Action could not be performed on key."
    }


# --- never leak ---------------------------------------------------------------------------------

SECRET = "CKR_GENERAL_ERROR deadbeefcafe /var/lib/softhsm/tokens"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError(SECRET),
        KeyError(SECRET),
        RuntimeError(SECRET),
        InternalError(SECRET),
        HsmUnavailable(SECRET),
        Unauthenticated(SECRET),
        IntegrityError(SECRET),
        Conflict(SECRET, reason=Reason.INVALID_STATE),
        NotFound(SECRET, reason=Reason.KEY_NOT_FOUND),
    ],
)
def test_text_that_is_not_a_safe_domain_message_never_reaches_the_body(exc: BaseException) -> None:
    _, body = to_http_error(exc, Operations.UNWRAP)
    assert SECRET not in json.dumps(body)
    assert "deadbeef" not in json.dumps(body)


def test_non_domain_exceptions_are_internal_errors() -> None:
    status, body = to_http_error(ZeroDivisionError("x"), Operations.GET_KEY)
    assert status == 500
    assert only_resource(body) == {"errorMsg": INTERNAL_ERROR_MSG}


def test_kp_code_cannot_turn_a_5xx_into_a_chatty_body() -> None:
    exc = with_kp_code(InternalError(SECRET), "INCOMPLETE_METADATA_ERR")
    status, body = to_http_error(exc, Operations.GET_KEY)
    assert status == 500
    assert SECRET not in json.dumps(body)


# --- per-operation spellings and fallbacks ------------------------------------------------------


def test_metadata_and_registrations_spell_key_not_found_without_err() -> None:
    exc = NotFound("x", reason=Reason.KEY_NOT_FOUND)
    assert reason_of(exc, Operations.GET_KEY_METADATA)[1]["code"] == "KEY_NOT_FOUND"
    assert reason_of(exc, Operations.LIST_REGISTRATIONS)[1]["code"] == "KEY_NOT_FOUND"
    assert reason_of(exc, Operations.WRAP)[1]["code"] == "KEY_NOT_FOUND_ERR"


def test_policies_answer_invalid_state_with_422() -> None:
    status, reason = reason_of(Conflict("x", reason=Reason.INVALID_STATE), Operations.PUT_KEY_POLICIES)
    assert (status, reason["code"]) == (422, "KEY_INVALID_STATE_ERR")
    assert reason["message"] == "A key must be a root key (non-extractable) in the Activated (1) state."


def test_registrations_need_a_root_key_with_422() -> None:
    status, reason = reason_of(
        InvalidInput("x", reason=Reason.KEY_ROOT_REQUIRED), Operations.CREATE_REGISTRATION
    )
    assert (status, reason["code"]) == (422, "KEY_ROOT_REQ_REG_ERR")


def test_a_reason_given_as_a_plain_string_still_maps() -> None:
    # store/base.py documents `Conflict(reason="CONCURRENT_UPDATE")`
    status, reason = reason_of(Conflict("lost race", reason="CONCURRENT_UPDATE"))  # type: ignore[arg-type]
    assert (status, reason["code"]) == (409, "REQ_TOO_EARLY_ERR")


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (InvalidInput, 400),
        (IntegrityError, 422),
        (NotFound, 404),
        (Gone, 410),
        (Conflict, 409),
        (AlreadyExists, 409),
        (TooEarly, 409),
        (Unauthenticated, 401),
        (PermissionDenied, 401),
        (ResourceExhausted, 429),
        (HsmUnavailable, 503),
        (Unsupported, 501),
        (InternalError, 500),
        (HsmBridgeError, 500),
    ],
)
def test_unknown_reasons_fall_back_on_the_exception_class(cls: type[HsmBridgeError], status: int) -> None:
    exc = cls("something new")
    exc.reason = "A_REASON_ADDED_LATER"  # type: ignore[assignment]
    got_status, body = to_http_error(exc, Operations.GET_KEY)
    assert got_status == status
    assert "errorMsg" in only_resource(body)


def test_default_reasons_of_each_class() -> None:
    assert to_http_error(AlreadyExists("The alias is taken"), Operations.CREATE_ALIAS) == (
        409,
        {
            "metadata": ERROR_METADATA,
            "resources": [{"errorMsg": "Conflict: The alias is taken: Alias could not be created."}],
        },
    )
    assert to_http_error(NotFound("Event does not exist"), Operations.EVENT_ACK)[0] == 404


_DOMAIN_CLASSES = [
    InvalidInput,
    IntegrityError,
    NotFound,
    Gone,
    Conflict,
    AlreadyExists,
    TooEarly,
    Unauthenticated,
    PermissionDenied,
    ResourceExhausted,
    HsmUnavailable,
    Unsupported,
    InternalError,
    HsmBridgeError,
]


@given(
    cls=st.sampled_from(_DOMAIN_CLASSES),
    reason=st.one_of(st.none(), st.sampled_from(list(Reason))),
    message=st.text(max_size=50),
    target=st.one_of(st.none(), st.text(min_size=1, max_size=10)),
    target_type=st.sampled_from(["field", "param", "path_param", "bogus"]),
    operation=st.sampled_from([v for k, v in vars(Operations).items() if not k.startswith("_")]),
)
def test_every_domain_error_renders_a_well_formed_body(
    cls: type[HsmBridgeError],
    reason: Reason | None,
    message: str,
    target: str | None,
    target_type: str,
    operation: Operation,
) -> None:
    exc = cls(message, reason=reason, target=target, metadata={"target_type": target_type})
    status, body = to_http_error(exc, operation)
    json.dumps(body)
    resource = only_resource(body)
    assert isinstance(resource["errorMsg"], str) and resource["errorMsg"]
    assert 400 <= status < 600
    for entry in resource.get("reasons", []):
        assert entry["status"] == status
        assert entry["moreInfo"] == MORE_INFO
        assert entry.get("target", {"type": "field"})["type"] in ("field", "param", "path_param")
    if status in (401, 429, 500):
        assert set(resource) == {"errorMsg"}
    if status == 503:  # the fixed errorMsg, at most one machine-readable reason from the table
        assert resource["errorMsg"] == UNAVAILABLE_MSG
        assert len(resource.get("reasons", [])) <= 1
