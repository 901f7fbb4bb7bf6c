"""Authorisation: the role × action matrix over every action, endpoint and RPC coverage, instance
scoping, the KeyPurge grant, overrides."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from pydantic import ValidationError

from hsmbridge import v1
from hsmbridge.errors import InternalError, PermissionDenied
from hsmbridge.security.authz import (
    ACTIONS,
    DELEGATED_RPCS,
    DEPRECATED_KEY_ACTIONS,
    ENDPOINTS,
    PUBLIC_RPCS,
    RPC_ACTIONS,
    ActionClass,
    Authorizer,
    AuthzConfig,
    authorize,
    endpoint_for,
    rest_action,
    rpc_action,
)
from hsmbridge.security.principals import Identity
from hsmbridge.v1 import crypto_pb2, keys_pb2

# The expected matrix, written out independently of the implementation's table. Columns: Reader,
# ReaderPlus, Writer, Manager, KeyPurge-only. "x" = allowed. Source: IBM's role tables (see the
# docstring of hsmbridge.security.authz); rows marked [I] are inferences.
MATRIX = {
    "kms.secrets.create": "--xx-",
    "kms.secrets.list": "xxxx-",
    "kms.secrets.head": "xxxx-",
    "kms.secrets-with-policy-overrides.create": "---x-",  # [I]
    "kms.secrets.read": "-xxx-",
    "kms.secrets.patch": "---x-",
    "kms.secrets.delete": "---x-",
    "kms.secrets.readmetadata": "xxxx-",
    "kms.secrets.purge": "----x",
    "kms.secrets.restore": "---x-",
    "kms.secrets.listkeyversions": "xxxx-",
    "kms.secrets.wrap": "xxxx-",
    "kms.secrets.unwrap": "xxxx-",
    "kms.secrets.rewrap": "xxxx-",
    "kms.secrets.rotate": "--xx-",
    "kms.secrets.setkeyfordeletion": "--xx-",
    "kms.secrets.unsetkeyfordeletion": "--xx-",
    "kms.secrets.enable": "---x-",
    "kms.secrets.disable": "---x-",
    "kms.secrets.sync": "--xx-",
    "kms.secrets.eventack": "xxxx-",  # [I]
    "kms.secrets.createalias": "--xx-",
    "kms.secrets.deletealias": "--xx-",  # [I]
    "kms.policies.write": "---x-",
    "kms.policies.read": "---x-",
    "kms.instancepolicies.write": "---x-",
    "kms.instancepolicies.read": "---x-",
    "kms.instance.readallowedipport": "---x-",
    "kms.importtoken.create": "--xx-",
    "kms.importtoken.read": "--xx-",
    "kms.registrations.create": "xxxx-",
    "kms.registrations.merge": "xxxx-",
    "kms.registrations.write": "xxxx-",
    "kms.registrations.delete": "xxxx-",
    "kms.registrations.list": "xxxx-",
    "kms.keyrings.list": "xxxx-",
    "kms.keyrings.create": "--xx-",
    "kms.keyrings.delete": "---x-",
    "hsmbridge.hsm.read": "---x-",  # [I]
    # Huawei Cloud KMS v1.0 (all [I], see security/authz.py)
    "kms:createKey": "--xx-",
    "kms:describeKey": "xxxx-",
    "kms:listKeys": "xxxx-",
    "kms:enableKey": "---x-",
    "kms:disableKey": "---x-",
    "kms:scheduleKeyDeletion": "---x-",
    "kms:cancelKeyDeletion": "---x-",
    "kms:updateKeyAlias": "--xx-",
    "kms:updateKeyDescription": "--xx-",
    "kms:getParametersForImport": "--xx-",
    "kms:importKeyMaterial": "--xx-",
    "kms:deleteImportedKeyMaterial": "---x-",
    "kms:createDataKey": "xxxx-",
    "kms:createDataKeyWithoutPlaintext": "xxxx-",
    "kms:encryptDataKey": "xxxx-",
    "kms:decryptDataKey": "xxxx-",
    "kms:encryptData": "xxxx-",
    "kms:decryptData": "xxxx-",
    "kms:genRandom": "xxxx-",
    # cloud push [I]
    "hsmbridge.push.connections.create": "---x-",
    "hsmbridge.push.connections.read": "---x-",
    "hsmbridge.push.connections.delete": "---x-",
    "hsmbridge.push.connections.test": "---x-",
    "hsmbridge.push.keys.create": "---x-",
    "hsmbridge.push.keys.read": "xxxx-",
    "hsmbridge.push.keys.delete": "---x-",
    "hsmbridge.push.keys.import": "---x-",
}

TENANT = "tenant-a"
IDENTITIES = [
    Identity("reader", instances=frozenset({TENANT}), roles=frozenset({"Reader"})),
    Identity("readerplus", instances=frozenset({TENANT}), roles=frozenset({"ReaderPlus"})),
    Identity("writer", instances=frozenset({TENANT}), roles=frozenset({"Writer"})),
    Identity("manager", instances=frozenset({TENANT}), roles=frozenset({"Manager"})),
    Identity("purger", instances=frozenset({TENANT}), key_purge=True),
]

# Spec §3: endpoint → (IAM action, audit event).
SPEC = {
    "E1": ("kms.secrets.create", "kms.secrets.create"),
    "E2": ("kms.secrets.list", "kms.secrets.list"),
    "E3": ("kms.secrets.head", "kms.secrets.head"),
    "E4": ("kms.secrets-with-policy-overrides.create", "kms.secrets-with-policy-overrides.create"),
    "E5": ("kms.secrets.read", "kms.secrets.read"),
    "E7": ("kms.secrets.patch", "kms.secrets.patch"),
    "E8": ("kms.secrets.delete", "kms.secrets.delete"),
    "E9": ("kms.secrets.readmetadata", "kms.secrets-metadata.read"),
    "E10": ("kms.secrets.purge", "kms.secrets.purge"),
    "E11": ("kms.secrets.restore", "kms.secrets.restore"),
    "E12": ("kms.secrets.listkeyversions", "kms.secrets-key-versions.list"),
    "E13": ("kms.secrets.wrap", "kms.secrets.wrap"),
    "E14": ("kms.secrets.unwrap", "kms.secrets.unwrap"),
    "E15": ("kms.secrets.rewrap", "kms.secrets.rewrap"),
    "E16": ("kms.secrets.rotate", "kms.secrets.rotate"),
    "E17": ("kms.secrets.setkeyfordeletion", "kms.secrets.setkeyfordeletion"),
    "E18": ("kms.secrets.unsetkeyfordeletion", "kms.secrets.unsetkeyfordeletion"),
    "E19": ("kms.secrets.enable", "kms.secrets.enable"),
    "E20": ("kms.secrets.disable", "kms.secrets.disable"),
    "E21": ("kms.secrets.sync", "kms.secrets.sync"),
    "E22": ("kms.policies.write", "kms.policies.write"),
    "E23": ("kms.policies.read", "kms.policies.read"),
    "E24": ("kms.instancepolicies.write", "kms.instance-policies.write"),
    "E25": ("kms.instancepolicies.read", "kms.instance-policies.read"),
    "E26": ("kms.instance.readallowedipport", "kms.instance-allowed-ip-port.read"),
    "E27": ("kms.importtoken.create", "kms.import-token.create"),
    "E28": ("kms.importtoken.read", "kms.import-token.read"),
    "E29": ("kms.registrations.create", "kms.registrations.create"),
    "E30": ("kms.registrations.merge", "kms.registrations.merge"),
    "E31": ("kms.registrations.write", "kms.registrations.write"),
    "E32": ("kms.registrations.delete", "kms.registrations.delete"),
    "E33": ("kms.registrations.write", "kms.registrations.write"),  # none listed in the spec [I]
    "E34": ("kms.registrations.list", "kms.registrations.list"),
    "E35": ("kms.registrations.list", "kms.registrations.list"),
    "E36": ("kms.secrets.eventack", "kms.secrets-event.ack"),
    "E37": ("kms.secrets.createalias", "kms.secrets-alias.create"),
    "E38": ("kms.secrets.deletealias", "kms.secrets-alias.delete"),
    "E39": ("kms.keyrings.list", "kms.key-rings.list"),
    "E40": ("kms.keyrings.create", "kms.key-rings.create"),
    "E41": ("kms.keyrings.delete", "kms.key-rings.delete"),
}


def test_the_matrix_covers_exactly_the_table() -> None:
    assert set(MATRIX) == set(ACTIONS)


@pytest.mark.parametrize(
    ("action", "identity", "allowed"),
    [
        pytest.param(action, identity, row[i] == "x", id=f"{action}-{identity.principal_id}")
        for action, row in MATRIX.items()
        for i, identity in enumerate(IDENTITIES)
    ],
)
def test_role_action_matrix(action: str, identity: Identity, allowed: bool) -> None:
    if allowed:
        assert authorize(identity, action, TENANT).name == action
    else:
        with pytest.raises(PermissionDenied) as info:
            authorize(identity, action, TENANT)
        assert action in info.value.message


def test_purge_needs_the_grant_even_for_a_manager() -> None:
    manager = IDENTITIES[3]
    with pytest.raises(PermissionDenied):
        authorize(manager, "kms.secrets.purge", TENANT)
    both = Identity("mp", instances=frozenset({TENANT}), roles=frozenset({"Manager"}), key_purge=True)
    authorize(both, "kms.secrets.purge", TENANT)
    authorize(both, "kms.secrets.delete", TENANT)


def test_no_roles_allow_nothing() -> None:
    nobody = Identity("nobody", instances=None)
    for action in ACTIONS:
        with pytest.raises(PermissionDenied):
            authorize(nobody, action, TENANT)


@pytest.mark.parametrize("identity", IDENTITIES, ids=lambda i: i.principal_id)
def test_an_instance_outside_the_identity_is_denied_whatever_the_role(identity: Identity) -> None:
    for action in ACTIONS:
        with pytest.raises(PermissionDenied, match="instance"):
            authorize(identity, action, "tenant-b")


def test_any_instance_and_no_instance() -> None:
    anywhere = Identity("ops", instances=None, roles=frozenset({"Reader"}))
    authorize(anywhere, "kms.secrets.list", "whatever")
    nowhere = Identity("lost", instances=frozenset(), roles=frozenset({"Manager"}))
    with pytest.raises(PermissionDenied):
        authorize(nowhere, "kms.secrets.list", TENANT)


def test_unknown_actions_are_a_wiring_bug_and_deny() -> None:
    with pytest.raises(InternalError):
        authorize(IDENTITIES[3], "kms.secrets.frobnicate", TENANT)


# Endpoints (REST).


def test_every_spec_endpoint_is_mapped_with_the_spec_action_and_event() -> None:
    numbers = [e.number for e in ENDPOINTS]
    assert numbers == [f"E{i}" for i in range(1, 42)]
    for endpoint in ENDPOINTS:
        if endpoint.number == "E6":
            assert endpoint.action is None
            continue
        action, event = SPEC[endpoint.number]
        assert endpoint.action == action
        assert ACTIONS[action].event == event


@pytest.mark.parametrize(
    ("method", "path", "param", "expected"),
    [
        ("POST", "/api/v2/keys", None, "kms.secrets.create"),
        ("GET", "/api/v2/keys/", None, "kms.secrets.list"),
        ("HEAD", "/api/v2/keys", None, "kms.secrets.head"),
        ("GET", "/api/v2/keys/registrations", None, "kms.registrations.list"),
        ("GET", "/api/v2/keys/0a1b2c3d-0000-4000-8000-000000000000", None, "kms.secrets.read"),
        ("GET", "/api/v2/keys/my-alias", None, "kms.secrets.read"),
        ("GET", "/api/v2/keys/my-alias/metadata", None, "kms.secrets.readmetadata"),
        ("DELETE", "/api/v2/keys/k/purge", None, "kms.secrets.purge"),
        ("POST", "/api/v2/keys/k/actions/wrap", None, "kms.secrets.wrap"),
        ("POST", "/api/v2/keys/k/actions/unsetKeyForDeletion", None, "kms.secrets.unsetkeyfordeletion"),
        ("POST", "/api/v2/keys/k", "wrap", "kms.secrets.wrap"),
        ("POST", "/api/v2/keys/k", "setKeyForDeletion", "kms.secrets.setkeyfordeletion"),
        ("POST", "/api/v2/keys/k", "frobnicate", None),
        ("POST", "/api/v2/keys/k", None, None),
        (
            "POST",
            "/api/v2/keys/k/registrations/crn:v1:bluemix:public:cloud-object-storage:global:a/1234:5678:bucket:b",
            None,
            "kms.registrations.create",
        ),
        ("DELETE", "/api/v2/keys/k/registrations/crn%3Av1%3A", None, "kms.registrations.delete"),
        ("POST", "/api/v2/keys/k/registrations", "deactivate", "kms.registrations.write"),
        ("GET", "/api/v2/keys/k/registrations", None, "kms.registrations.list"),
        ("DELETE", "/api/v2/keys/k/aliases/a1", None, "kms.secrets.deletealias"),
        ("POST", "/api/v2/key_rings/ring-1", None, "kms.keyrings.create"),
        ("GET", "/api/v2/instance/allowed_ip_port", None, "kms.instance.readallowedipport"),
        ("GET", "/api/v2/import_token", None, "kms.importtoken.read"),
        ("GET", "/api/v2/nothing", None, None),
        ("PUT", "/api/v2/keys", None, None),
    ],
)
def test_rest_action_resolves_concrete_requests(
    method: str, path: str, param: str | None, expected: str | None
) -> None:
    action = rest_action(method, path, param)
    assert (action.name if action else None) == expected


REST_MODULES = (
    "registrations",
    "key_rings",
    "key_policies",
    "instance",
    "import_tokens",
    "events",
    "aliases",
    "actions",
    "keys",
)


def _rest_routes() -> list[tuple[str, str, str]]:
    """(method, path template, summary) of every route the REST facade declares."""
    from fastapi.routing import APIRoute

    routes = []
    for name in REST_MODULES:
        module = importlib.import_module(f"hsmbridge.rest.{name}")
        for route in module.router.routes:
            if isinstance(route, APIRoute):
                routes.extend((m, route.path, route.summary or "") for m in route.methods)
    return routes


def test_every_route_of_the_rest_facade_resolves_to_its_spec_endpoint() -> None:
    """The facade's own routes, with sample values in their parameters, resolve to an action; a
    route whose summary names its endpoint ("… (E29)") resolves to that very endpoint."""
    routes = _rest_routes()
    assert len(routes) >= 41
    seen = set()
    for method, template, summary in routes:
        path = re.sub(r"\{[^}:]*:path\}", "crn:v1:bluemix:public:cos:global:a/123:456:bucket:b", template)
        path = re.sub(r"\{[^}]*\}", "sample-1", path)
        endpoint = endpoint_for(method, path)
        assert endpoint is not None, f"{method} {template} has no authorization rule"
        param = {"E6": "wrap", "E33": "deactivate"}.get(endpoint.number)
        assert rest_action(method, path, param) is not None
        named = re.search(r"\((E\d+)", summary)
        if named:
            assert endpoint.number == named.group(1), f"{method} {template}"
        seen.add(endpoint.number)
    assert seen == {e.number for e in ENDPOINTS}


def test_every_deprecated_action_value_is_a_known_action() -> None:
    assert set(DEPRECATED_KEY_ACTIONS.values()) <= set(ACTIONS)
    assert endpoint_for("post", "/api/v2/keys/x").number == "E6"  # type: ignore[union-attr]


# RPCs (gRPC).


def _rpc_methods() -> set[str]:
    """Every method of every generated service module, found by walking hsmbridge.v1."""
    methods = set()
    for info in pkgutil.iter_modules(v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"hsmbridge.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods.update(f"/{service.full_name}/{m.name}" for m in service.methods)
    return methods


def test_every_rpc_of_the_protos_is_mapped() -> None:
    """A new RPC without a rule fails here, not in production (where it would be denied)."""
    methods = _rpc_methods()
    assert "/hsmbridge.v1.KeyService/CreateKey" in methods
    assert methods <= set(RPC_ACTIONS) | DELEGATED_RPCS
    assert not (set(RPC_ACTIONS) & (PUBLIC_RPCS | DELEGATED_RPCS))
    for action in RPC_ACTIONS.values():
        assert action in ACTIONS
    for method in DELEGATED_RPCS:
        with pytest.raises(InternalError):
            rpc_action(method)  # never gated as an RPC: the carried request is


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("/hsmbridge.v1.KeyService/CreateKey", "kms.secrets.create"),
        ("/hsmbridge.v1.KeyService/ImportKey", "kms.secrets.create"),
        ("/hsmbridge.v1.KeyService/GetKey", "kms.secrets.readmetadata"),
        ("/hsmbridge.v1.KeyService/GetKeyPayload", "kms.secrets.read"),
        ("/hsmbridge.v1.CryptoService/Wrap", "kms.secrets.wrap"),
        ("/hsmbridge.v1.CryptoService/Unwrap", "kms.secrets.unwrap"),
        ("/hsmbridge.v1.CryptoService/Rewrap", "kms.secrets.rewrap"),
        ("/hsmbridge.v1.ImportTokenService/CreateImportToken", "kms.importtoken.create"),
        ("/hsmbridge.v1.HsmService/GetHsmInfo", "hsmbridge.hsm.read"),
    ],
)
def test_rpc_actions(method: str, expected: str) -> None:
    assert rpc_action(method).name == expected


def test_set_key_state_is_enable_or_disable_by_its_request() -> None:
    method = "/hsmbridge.v1.KeyService/SetKeyState"
    enable = keys_pb2.SetKeyStateRequest(key_id="k", state=keys_pb2.KEY_STATE_ACTIVE)
    disable = keys_pb2.SetKeyStateRequest(key_id="k", state=keys_pb2.KEY_STATE_SUSPENDED)
    assert rpc_action(method, enable).name == "kms.secrets.enable"
    assert rpc_action(method, disable).name == "kms.secrets.disable"
    assert rpc_action(method).name == "kms.secrets.disable"


def test_each_crypto_stream_message_has_its_own_action() -> None:
    method = "/hsmbridge.v1.CryptoService/CryptoStream"
    assert rpc_action(method).name == "kms.secrets.unwrap"  # opening the stream
    for which, action in [("wrap", "wrap"), ("unwrap", "unwrap"), ("rewrap", "rewrap")]:
        message = crypto_pb2.CryptoStreamRequest(sequence=1, **{which: {"key_id": "k"}})
        assert rpc_action(method, message).name == f"kms.secrets.{action}"
    assert rpc_action(method, crypto_pb2.CryptoStreamRequest(sequence=2)).name == "kms.secrets.unwrap"


def test_unknown_rpcs_deny() -> None:
    with pytest.raises(InternalError):
        rpc_action("/hsmbridge.v1.KeyService/DropAllKeys")


def test_action_classes() -> None:
    crypto = {a.name for a in ACTIONS.values() if a.action_class is ActionClass.CRYPTO}
    huawei_crypto = {
        "kms:createDataKey",
        "kms:createDataKeyWithoutPlaintext",
        "kms:encryptDataKey",
        "kms:decryptDataKey",
        "kms:encryptData",
        "kms:decryptData",
        "kms:genRandom",
    }
    assert crypto == {"kms.secrets.wrap", "kms.secrets.unwrap", "kms.secrets.rewrap"} | huawei_crypto
    assert ACTIONS["kms.secrets.list"].action_class is ActionClass.READ
    assert ACTIONS["kms.secrets.create"].action_class is ActionClass.MANAGE


# Overrides.


def test_overrides_change_the_minimum_role() -> None:
    strict = Authorizer(AuthzConfig(overrides={"kms.secrets.wrap": "Writer", "kms.secrets.unwrap": "writer"}))
    reader, writer = IDENTITIES[0], IDENTITIES[2]
    with pytest.raises(PermissionDenied):
        strict.authorize(reader, "kms.secrets.wrap", TENANT)
    strict.authorize(writer, "kms.secrets.unwrap", TENANT)
    strict.authorize(reader, "kms.secrets.rewrap", TENANT)  # not overridden
    authorize(reader, "kms.secrets.wrap", TENANT)  # the default table is untouched


@pytest.mark.parametrize(
    "overrides",
    [{"kms.secrets.frob": "Reader"}, {"kms.secrets.wrap": "Owner"}, {"kms.secrets.purge": "Manager"}],
)
def test_bad_overrides_are_refused(overrides: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        AuthzConfig(overrides=overrides)
