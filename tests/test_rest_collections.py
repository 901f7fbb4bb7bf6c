"""The collection envelope, both ways (spec §1.3, Key Protect's BAD_BODY_ERR examples)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hsmbridge.errors import HsmBridgeError, InvalidInput
from hsmbridge.rest.collections import (
    CollectionType,
    collection,
    num_collection_resource,
    parse_collection,
)
from hsmbridge.rest.errors import Operations, to_http_error

KEY = "application/vnd.ibm.kms.key+json"
POLICY = "application/vnd.ibm.kms.policy+json"

CREATE_ROOT_KEY = {
    "metadata": {"collectionType": KEY, "collectionTotal": 1},
    "resources": [
        {"type": KEY, "name": "Root-key", "description": "A Key Protect key", "extractable": False},
    ],
}


def body_with(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(CREATE_ROOT_KEY)
    body.update(changes)
    return body


def create_key_error(exc: HsmBridgeError) -> tuple[int, dict[str, Any]]:
    status, body = to_http_error(exc, Operations.CREATE_KEY)
    resource = body["resources"][0]
    assert resource["errorMsg"] == "Bad Request: Key could not be created. See 'reasons' for more details."
    return status, resource["reasons"][0]


# --- responses ----------------------------------------------------------------------------------


def test_a_key_collection() -> None:
    assert collection(CollectionType.KEY, [{"id": "fadedbee-0000-0000-0000-1234567890ab"}]) == {
        "metadata": {"collectionType": KEY, "collectionTotal": 1},
        "resources": [{"id": "fadedbee-0000-0000-0000-1234567890ab"}],
    }


def test_collection_total_always_counts_the_resources() -> None:
    body = collection(CollectionType.KEY_RING, ({"id": ring} for ring in ["default", "a", "b"]))
    assert body["metadata"]["collectionTotal"] == 3
    assert collection(CollectionType.KEY, [])["metadata"]["collectionTotal"] == 0


def test_versions_with_total_count_like_e12() -> None:
    versions = [
        {"id": "fadedbee-0000-0000-0000-1234567890ab", "creationDate": "2024-01-01T00:00:00Z"},
        {"id": "addedace-0000-0000-0000-1234567890ab", "creationDate": "2023-01-01T00:00:00Z"},
    ]
    assert collection(CollectionType.KEY, versions, total_count=4)["metadata"] == {
        "collectionType": KEY,
        "collectionTotal": 2,
        "totalCount": 4,
    }


def test_incomplete_search_rides_in_metadata_but_cannot_override_the_core_fields() -> None:
    body = collection(
        CollectionType.KEY,
        [{"id": "x"}],
        extra_metadata={"incompleteSearch": True, "collectionTotal": 99, "collectionType": "nope"},
    )
    assert body["metadata"] == {"collectionType": KEY, "collectionTotal": 1, "incompleteSearch": True}


def test_collection_types_serialise_as_plain_strings() -> None:
    assert (
        collection(CollectionType.ERROR, [])["metadata"]["collectionType"]
        == "application/vnd.ibm.kms.error+json"
    )
    assert type(collection(CollectionType.POLICY, [])["metadata"]["collectionType"]) is str
    assert CollectionType.KEY_ACTION_RESTORE == "application/vnd.ibm.kms.key_action_restore+json"


def test_resources_are_copied_not_aliased() -> None:
    resource = {"id": "x"}
    body = collection(CollectionType.KEY, [resource])
    body["resources"][0]["id"] = "changed"
    assert resource == {"id": "x"}


# --- requests -----------------------------------------------------------------------------------


def test_the_e1_example_parses() -> None:
    assert parse_collection(CREATE_ROOT_KEY, expected_type=KEY) == CREATE_ROOT_KEY["resources"]


def test_envelope_names_match_case_insensitively() -> None:
    body = {"Metadata": {"CollectionType": KEY, "CollectionTotal": 1}, "Resources": [{"name": "k"}]}
    assert parse_collection(body, expected_type=KEY) == [{"name": "k"}]


@pytest.mark.parametrize("metadata", [{}, None, "metadata", [], 1])
def test_empty_metadata_is_bad_body(metadata: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body_with(metadata=metadata))
    status, reason = create_key_error(caught.value)
    assert (status, reason["code"]) == (400, "BAD_BODY_ERR")
    assert reason["message"] == (
        "Invalid body data was passed. Please ensure the data passed had valid formatting with no "
        "invalid characters: CollectionMetadata is empty"
    )


def test_missing_metadata_is_bad_body() -> None:
    body = body_with()
    del body["metadata"]
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body)
    assert create_key_error(caught.value)[1]["message"].endswith(": CollectionMetadata is empty")


def test_two_keys_are_refused_even_when_the_total_says_one() -> None:
    """Key Protect's own BAD_BODY_ERR example: collectionTotal 1, two resources."""
    second = {"type": KEY, "name": "Root-key-2", "description": "example-key", "extractable": False}
    body = body_with(resources=[CREATE_ROOT_KEY["resources"][0], second])
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body, expected_type=KEY)
    _, reason = create_key_error(caught.value)
    assert reason["code"] == "BAD_BODY_ERR"
    assert reason["message"] == (
        "Invalid body data was passed. Please ensure the data passed had valid formatting with no "
        "invalid characters: Only creation of one key per request is supported"
    )


def test_two_keys_with_a_matching_total_are_still_refused() -> None:
    body = body_with(metadata={"collectionType": KEY, "collectionTotal": 2})
    body["resources"] = body["resources"] * 2
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body)
    assert create_key_error(caught.value)[1]["message"].endswith(
        "Only creation of one key per request is supported"
    )


@pytest.mark.parametrize("total", [2, 0, "1", 1.0, True, None])
def test_a_total_that_does_not_count_the_resources_is_a_mismatch(total: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body_with(metadata={"collectionType": KEY, "collectionTotal": total}))
    _, reason = create_key_error(caught.value)
    assert reason == {
        "code": "COLLECTION_TOTAL_MISMATCH_ERR",
        "message": "Collection total does not match number of resources",
        "status": 400,
        "moreInfo": "https://cloud.ibm.com/apidocs/key-protect",
    }


def test_instance_policy_mismatch_example() -> None:
    body = {
        "metadata": {"collectionType": POLICY, "collectionTotal": 2},
        "resources": [{"policy_type": "dualAuthDelete", "policy_data": {"enabled": False}}],
    }
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body, expected_type=POLICY, max_resources=6)
    status, error = to_http_error(caught.value, Operations.PUT_INSTANCE_POLICIES)
    assert status == 400
    assert error["resources"][0]["errorMsg"] == (
        "Bad Request: Instance policy could not be created. See 'reasons' for more details."
    )
    assert error["resources"][0]["reasons"][0]["code"] == "COLLECTION_TOTAL_MISMATCH_ERR"


def test_instance_policies_have_their_own_too_many_error() -> None:
    resource = {"policy_type": "dualAuthDelete", "policy_data": {"enabled": False}}
    body = {"metadata": {"collectionType": POLICY, "collectionTotal": 2}, "resources": [resource, resource]}
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body, expected_type=POLICY, too_many=num_collection_resource)
    reason = to_http_error(caught.value, Operations.PUT_INSTANCE_POLICIES).body["resources"][0]["reasons"][0]
    assert reason["code"] == "NUM_COLLECTION_RESOURCE_ERR"


def test_key_policies_take_up_to_two_resources() -> None:
    body = {
        "metadata": {"collectionType": POLICY, "collectionTotal": 2},
        "resources": [
            {"type": POLICY, "rotation": {"enabled": True, "interval_month": 3}},
            {"type": POLICY, "dualAuthDelete": {"enabled": True}},
        ],
    }
    assert len(parse_collection(body, expected_type=POLICY, max_resources=2)) == 2


def test_no_body_is_no_body_err() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_collection(None)
    assert create_key_error(caught.value)[1]["code"] == "NO_BODY_ERR"


@pytest.mark.parametrize("body", [[CREATE_ROOT_KEY], "body", 1, True])
def test_a_body_that_is_not_an_object_is_bad_body(body: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body)
    assert create_key_error(caught.value)[1]["code"] == "BAD_BODY_ERR"


@pytest.mark.parametrize("resources", [None, [], {"name": "k"}, "k"])
def test_resources_must_be_a_non_empty_list(resources: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body_with(resources=resources))
    assert create_key_error(caught.value)[1]["code"] == "BAD_BODY_ERR"


def test_empty_resources_can_be_allowed() -> None:
    body = {"metadata": {"collectionType": KEY, "collectionTotal": 0}, "resources": []}
    assert parse_collection(body, min_resources=0) == []


def test_each_resource_must_be_an_object() -> None:
    body = body_with(resources=["Root-key"])
    with pytest.raises(InvalidInput) as caught:
        parse_collection(body)
    assert create_key_error(caught.value)[1]["code"] == "BAD_BODY_ERR"


def test_collection_type_is_checked_when_the_caller_names_one() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_collection(CREATE_ROOT_KEY, expected_type=POLICY)
    assert create_key_error(caught.value)[1]["code"] == "BAD_BODY_ERR"
    no_type = body_with(metadata={"collectionTotal": 1})
    with pytest.raises(InvalidInput):
        parse_collection(no_type, expected_type=KEY)
    assert parse_collection(no_type) == CREATE_ROOT_KEY["resources"]


def test_restore_accepts_either_documented_collection_type() -> None:
    restore_types = {CollectionType.KEY_ACTION_RESTORE, CollectionType.KEY}
    for collection_type in (KEY, "application/vnd.ibm.kms.key_action_restore+json"):
        body = {
            "metadata": {"collectionType": collection_type, "collectionTotal": 1},
            "resources": [{"payload": "dGVzdA=="}],
        }
        assert parse_collection(body, expected_type=restore_types) == [{"payload": "dGVzdA=="}]
