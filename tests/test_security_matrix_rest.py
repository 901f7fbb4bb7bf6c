"""The role × action matrix over every Key Protect REST endpoint, through the real FastAPI app,
the production authenticator (static tokens) and gate, over SoftHSM2.

The cases are driven by `security.authz.ENDPOINTS` (E6 once per ``?action=`` value; the requests
are in `security_cases`), so a new endpoint without a case fails the suite instead of going
untested. For each case and each role of instance A:

- allowed ⇒ the endpoint's own outcome (anything but 401/403, and no 5xx), audited under the
  action's event name;
- denied ⇒ 401 with Key Protect's fixed error body, an audit event ``failure/PERMISSION_DENIED``,
  and nothing changed in the instance.

Plus: missing, garbage, foreign-scheme and unknown credentials are 401 on every endpoint (before
the 400 of a missing instance header); purge needs KeyPurge even for a Manager; dual
authorisation counts principals by id.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from security_cases import REST_CASES, UNAUTHORIZED_BODY, RestCase, allowed, prepare_rest, send
from security_support import CALLERS, INSTANCE_A, ROLE_CALLERS, Stack, key_body, snapshot

from hsmbridge.security.authz import ENDPOINTS, rest_action

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm


def test_every_case_resolves_to_its_action() -> None:
    """The matrix addresses the route it means: `rest_action` of each concrete request is the
    action the case expects (and every spec endpoint is in the matrix)."""
    assert {c.endpoint.number for c in REST_CASES} == {e.number for e in ENDPOINTS}
    for case in REST_CASES:
        path, _, query = case.path("0c8a1b7e-0000-4000-8000-000000000001").partition("?")
        action_param = query.removeprefix("action=") if case.endpoint.action is None else None
        assert rest_action(case.endpoint.method, path, action_param) == case.action, case.id


@pytest.mark.parametrize("role", ROLE_CALLERS)
@pytest.mark.parametrize("case", REST_CASES, ids=[c.id for c in REST_CASES])
def test_role_action_matrix(rest: TestClient, stack: Stack, case: RestCase, role: str) -> None:
    caller = CALLERS[role]
    path, body = prepare_rest(stack, case)
    before = snapshot(stack)
    stack.take_events()
    correlation = f"matrix-{case.id}-{role}"
    response = send(rest, case, path, body, caller.rest(correlation_id=correlation))
    events = stack.take_events()
    assert len(events) == 1, events
    event = events[0]
    assert (event["event"], event["principal"], event["instance"]) == (
        case.action.event,
        caller.principal,
        INSTANCE_A,
    )
    assert response.headers["correlation-id"] == correlation
    if allowed(caller, case.action):
        assert response.status_code not in (401, 403), (case.id, role, response.text)
        assert response.status_code < 500, (case.id, role, response.text)
        assert event["reason"] != "PERMISSION_DENIED"
    else:
        assert response.status_code == 401, (case.id, role, response.text)
        assert case.endpoint.method == "HEAD" or response.json() == UNAUTHORIZED_BODY
        assert (event["outcome"], event["reason"]) == ("failure", "PERMISSION_DENIED")
        assert snapshot(stack) == before, f"{case.id} was denied to {role} but changed the instance"


BAD_CREDENTIALS = {
    "missing": None,
    "empty-bearer": "Bearer ",
    "garbage": "Bearer not-a-token",
    "unknown-static": "Bearer hsmb_" + "x" * 43,
    "jwt-shaped": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    "basic": "Basic dXNlcjpwYXNz",
    "token-without-scheme": None,  # filled in below: a valid token, but no "Bearer "
}


@pytest.mark.parametrize("case", REST_CASES, ids=[c.id for c in REST_CASES])
def test_missing_or_invalid_credentials_are_401_everywhere(
    rest: TestClient, stack: Stack, case: RestCase
) -> None:
    path, body = prepare_rest(stack, case)
    before = snapshot(stack)
    stack.take_events()
    for credential, authorization in BAD_CREDENTIALS.items():
        if credential == "token-without-scheme":
            authorization = CALLERS["manager"].token
        headers = {"bluemix-instance": INSTANCE_A}
        if authorization is not None:
            headers["authorization"] = authorization
        response = send(rest, case, path, body, headers)
        assert response.status_code == 401, (case.id, credential, response.text)
        assert case.endpoint.method == "HEAD" or response.json() == UNAUTHORIZED_BODY
        (event,) = stack.take_events()
        assert (event["outcome"], event["reason"], event["principal"]) == ("failure", "UNAUTHENTICATED", None)
        assert event["event"] == case.action.event
    assert snapshot(stack) == before


@pytest.mark.parametrize("case", REST_CASES, ids=[c.id for c in REST_CASES])
def test_401_beats_400_without_an_instance_header(rest: TestClient, stack: Stack, case: RestCase) -> None:
    """Unauthenticated callers learn nothing, not even that the instance header is missing; an
    authenticated one gets the 400."""
    path, body = prepare_rest(stack, case)
    anonymous = send(rest, case, path, body, {})
    assert anonymous.status_code == 401, anonymous.text
    manager = CALLERS["manager"].rest()
    del manager["bluemix-instance"]
    response = send(rest, case, path, body, manager)
    assert response.status_code == 400, response.text
    if case.endpoint.method != "HEAD":
        assert response.json()["resources"][0]["reasons"][0]["code"] == "MISSING_FIELD_ERR"


def test_e6_with_an_unknown_action_still_authenticates_first(rest: TestClient, stack: Stack) -> None:
    key = stack.new_key()
    path = f"/api/v2/keys/{key.id}?action=explode"
    assert rest.post(path, headers={"bluemix-instance": INSTANCE_A}).status_code == 401
    assert (
        rest.post(path, headers={"authorization": "Bearer nope", "bluemix-instance": INSTANCE_A}).status_code
        == 401
    )
    assert rest.post(path, headers=CALLERS["reader"].rest()).status_code == 400


def test_purge_needs_the_key_purge_grant_even_for_a_manager(rest: TestClient, stack: Stack) -> None:
    manager, purger = CALLERS["manager"], CALLERS["purger"]
    key = rest.post("/api/v2/keys", json=key_body("to-purge"), headers=manager.rest()).json()["resources"][0]
    assert rest.delete(f"/api/v2/keys/{key['id']}", headers=manager.rest()).status_code == 204
    stack.clock.advance(hours=5)  # purge is allowed 4 h after deletion
    denied = rest.delete(f"/api/v2/keys/{key['id']}/purge", headers=manager.rest())
    assert denied.status_code == 401
    assert denied.json() == UNAUTHORIZED_BODY
    stack.take_events()
    purged = rest.delete(f"/api/v2/keys/{key['id']}/purge", headers=purger.rest())
    assert purged.status_code == 204, purged.text
    (event,) = stack.take_events()
    assert (event["event"], event["outcome"], event["principal"], event["key_id"]) == (
        "kms.secrets.purge",
        "success",
        purger.principal,
        key["id"],
    )


def test_dual_authorisation_counts_principals_by_id(rest: TestClient, stack: Stack) -> None:
    """The first authorisation and the delete must come from two different principals: the same
    Manager twice is refused, another Manager (another principal id) completes it."""
    manager, second = CALLERS["manager"], CALLERS["purger"]
    created = rest.post(
        "/api/v2/keys_with_policy_overrides",
        json=key_body("dual", dualAuthDelete={"enabled": True}),
        headers=manager.rest(),
    )
    assert created.status_code == 201, created.text
    key = created.json()["resources"][0]["id"]
    assert (
        rest.post(f"/api/v2/keys/{key}/actions/setKeyForDeletion", headers=manager.rest()).status_code == 204
    )
    alone = rest.delete(f"/api/v2/keys/{key}", headers=manager.rest())
    assert alone.status_code == 409, alone.text
    assert alone.json()["resources"][0]["reasons"][0]["code"] == "AUTHORIZATIONS_NOT_MET"
    stack.take_events()
    done = rest.delete(f"/api/v2/keys/{key}", headers=second.rest())
    assert done.status_code == 204, done.text
    (event,) = stack.take_events()
    assert (event["event"], event["outcome"], event["principal"]) == (
        "kms.secrets.delete",
        "success",
        second.principal,
    )
    deleted = stack.services.store.get_key(INSTANCE_A, key)
    assert deleted is not None and deleted.deleted_by == second.principal
