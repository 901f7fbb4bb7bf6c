"""The Key Protect collection envelope, both ways (§1.3).

Responses: every SDK reads ``metadata.collectionTotal`` and indexes ``resources``; the Go SDK
panics on a 201 whose ``resources`` is empty. `collection` always derives ``collectionTotal``
from the resources it is given, so the two cannot disagree.

Requests: `parse_collection` validates in Key Protect's order, because clients and test suites
compare reason codes:
1. no body → ``NO_BODY_ERR``; not an object → ``BAD_BODY_ERR``;
2. ``metadata`` missing, null or ``{}`` → ``BAD_BODY_ERR`` "...: CollectionMetadata is empty";
3. ``collectionType`` not one of the expected ones (when the caller names some) → ``BAD_BODY_ERR``;
4. ``resources`` not a list, or fewer than `min_resources` → ``BAD_BODY_ERR``;
5. more than `max_resources` → ``BAD_BODY_ERR`` "...: Only creation of one key per request is
   supported". This comes *before* the total check: Key Protect's own example sends
   ``collectionTotal: 1`` with two keys and gets this error, not a mismatch;
6. ``collectionTotal`` ≠ ``len(resources)`` → ``COLLECTION_TOTAL_MISMATCH_ERR``;
7. a resource that is not an object → ``BAD_BODY_ERR``.
Envelope names are matched like every other field (`bodies.get_field`): exactly, then
case-insensitively, as the Go-based Key Protect server does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from hsmbridge.errors import HsmBridgeError, InvalidInput, Reason
from hsmbridge.rest.bodies import get_field
from hsmbridge.rest.errors import ERROR_COLLECTION_TYPE, bad_body, no_body, with_kp_code


class CollectionType(enum.StrEnum):
    """The ``collectionType`` values of §1.3 (a StrEnum serialises as its plain string)."""

    KEY = "application/vnd.ibm.kms.key+json"
    KEY_VERSION = "application/vnd.ibm.kms.key.version+json"
    ERROR = ERROR_COLLECTION_TYPE
    POLICY = "application/vnd.ibm.kms.policy+json"
    KEY_ACTION_RESTORE = "application/vnd.ibm.kms.key_action_restore+json"
    ALLOWED_IP_METADATA = "application/vnd.ibm.kms.allowed_ip_metadata+json"
    REGISTRATION_INPUT = "application/vnd.ibm.kms.registration_input+json"
    REGISTRATION = "application/vnd.ibm.kms.registration+json"
    CRN = "application/vnd.ibm.kms.crn+json"
    RESOURCE_CRN = "application/vnd.ibm.kms.resource_crn+json"
    EVENT_ACKNOWLEDGE = "application/vnd.ibm.kms.event_acknowledge+json"
    KEY_RING = "application/vnd.ibm.kms.key_ring+json"


ONE_KEY_PER_REQUEST = "Only creation of one key per request is supported"
METADATA_EMPTY = "CollectionMetadata is empty"
RESOURCES_EMPTY = "Resources is empty"
COLLECTION_TOTAL_MISMATCH = "Collection total does not match number of resources"
NUM_COLLECTION_RESOURCE = (
    "Only a single instance policy may be created per query parameter. Please pass single resource object"
)


def collection(
    collection_type: str,
    resources: Iterable[Mapping[str, Any]],
    *,
    total_count: int | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A response envelope. `total_count` adds ``totalCount`` (paged lists with ``totalCount=true``);
    `extra_metadata` adds e.g. ``incompleteSearch`` but can never override the two core fields."""
    items = [dict(resource) for resource in resources]
    metadata: dict[str, Any] = {"collectionType": str(collection_type), "collectionTotal": len(items)}
    if total_count is not None:
        metadata["totalCount"] = total_count
    for name, value in (extra_metadata or {}).items():
        metadata.setdefault(name, value)
    return {"metadata": metadata, "resources": items}


def collection_total_mismatch() -> InvalidInput:
    """``COLLECTION_TOTAL_MISMATCH_ERR`` (400). No `Reason` spells it; see rest/errors.py."""
    return with_kp_code(
        InvalidInput(COLLECTION_TOTAL_MISMATCH, reason=Reason.BAD_BODY), "COLLECTION_TOTAL_MISMATCH_ERR"
    )


def num_collection_resource() -> InvalidInput:
    """``NUM_COLLECTION_RESOURCE_ERR``: the instance-policy flavour of "too many resources"."""
    return with_kp_code(
        InvalidInput(NUM_COLLECTION_RESOURCE, reason=Reason.BAD_BODY), "NUM_COLLECTION_RESOURCE_ERR"
    )


def _too_many_keys() -> HsmBridgeError:
    return bad_body(ONE_KEY_PER_REQUEST)


def parse_collection(
    body: Any,
    *,
    expected_type: str | Collection[str] | None = None,
    max_resources: int = 1,
    min_resources: int = 1,
    too_many: Callable[[], HsmBridgeError] = _too_many_keys,
) -> list[dict[str, Any]]:
    """Validate a request envelope (order in the module docstring) and return its resources.

    `expected_type` accepts one media type or several (restore bodies arrive as
    ``key_action_restore+json`` per the API reference and as ``key+json`` in IBM's own examples).
    `too_many` builds the error for more than `max_resources` resources; the default is the
    create-key wording, `num_collection_resource` is the instance-policy one.
    """
    if body is None:
        raise no_body()
    if not isinstance(body, dict):
        raise bad_body("the body must be a JSON object")

    metadata = get_field(body, "metadata")
    if not isinstance(metadata, dict) or not metadata:
        raise bad_body(METADATA_EMPTY)
    if expected_type is not None:
        allowed = {expected_type} if isinstance(expected_type, str) else set(expected_type)
        if get_field(metadata, "collectionType") not in allowed:
            raise bad_body("CollectionType is invalid")

    resources = get_field(body, "resources")
    if not isinstance(resources, list) or len(resources) < max(min_resources, 0):
        raise bad_body(RESOURCES_EMPTY)
    if len(resources) > max_resources:
        raise too_many()

    total = get_field(metadata, "collectionTotal")
    if isinstance(total, bool) or not isinstance(total, int) or total != len(resources):
        raise collection_total_mismatch()

    if not all(isinstance(resource, dict) for resource in resources):
        raise bad_body("each resource must be a JSON object")
    return resources
