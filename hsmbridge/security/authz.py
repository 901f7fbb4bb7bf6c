"""Authorisation: Key Protect's IAM actions, the minimum role each needs, and the check.

Every REST endpoint (E1–E41 of the spec) and every gRPC method maps to one ``kms.*`` IAM action;
each action has an audit event name, a minimum service role, and a rate-limit class. Roles are
additive (Reader < ReaderPlus < Writer < Manager), so "minimum role" is the whole rule — except
``kms.secrets.purge``, which no role includes: it needs the separate KeyPurge grant, even for a
Manager.

Provenance of the table (tags as in the spec digest):
- [S]  the action and event names: spec §3 table (E1–E41), which follows seed 003.
- [X]  the role columns: IBM's "Understanding user roles and resources" (ibm-cloud-docs/key-protect
       ``concepts/manage-access.md``, 2022 tables "Keys", "Key Rings", "Policies", "Import tokens",
       "Registrations"): Reader lists, reads metadata, reads the key total and versions, *and wraps,
       unwraps and rewraps* ("key readers can wrap and unwrap a key" — integrated services hold
       Reader through service-to-service authorisations, which is why); ReaderPlus adds retrieving a
       standard key's payload; Writer adds create, import, rotate, schedule/cancel deletion, sync,
       create key rings, import tokens; Manager adds enable, disable, delete, restore, patch, key and
       instance policies, delete key rings; KeyPurge alone carries ``kms.secrets.purge``.
       Registrations (all of E29–E35) are Reader. Aliases: "To create a key alias, you must be
       assigned a Manager or Writer service access role" (create-key-alias.md). Allowed IP port:
       "you must be assigned a Manager access policy" (instance policy docs).
- [I]  inferences, marked per row below: E4 create-with-policy-overrides → Manager (it sets key
       policies, which only Managers may); E38 delete alias → Writer (as create alias); E33
       deprecated deactivate-registration → ``kms.registrations.write`` at Reader (the spec lists no
       action; it modifies a registration like E31); E36 event_ack → Reader (an integrated-service
       call like the registrations); ``hsmbridge.hsm.read`` (gRPC GetHsmInfo: token, slot, module
       details — not a Key Protect action) → Manager.

Note the divergence from a common reading that crypto needs Writer: IBM documents wrap/unwrap/
rewrap for Reader. Deployments that want otherwise override it
(``[security.authz.overrides] "kms.secrets.wrap" = "Writer"``).

Denials raise `PermissionDenied` both for a missing role and for an instance the identity may not
use. The REST boundary renders both as 401 ``Unauthorized: The user does not have access to the
specified resource.`` — Key Protect answers "insufficient permissions" with 401, keeping 403 for
the service-to-service cases its spec documents — and gRPC as PERMISSION_DENIED.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hsmbridge.errors import InternalError, PermissionDenied
from hsmbridge.security.principals import Identity, Role


class ActionClass(enum.StrEnum):
    """Rate-limit classes: crypto is the hot path, manage touches the HSM or the store's write
    path, read is metadata only."""

    CRYPTO = "crypto"
    MANAGE = "manage"
    READ = "read"


@dataclass(frozen=True, slots=True)
class Action:
    #: the IAM action (``kms.secrets.readmetadata``)
    name: str
    #: the audit event name (``kms.secrets-metadata.read``)
    event: str
    #: the weakest role allowed; None: no role is enough (purge)
    min_role: Role | None
    action_class: ActionClass
    #: needs the KeyPurge grant
    key_purge: bool = False
    #: "X" documented by IBM, "I" inferred (see the module docstring)
    source: str = "X"


R, RP, W, M = Role.READER, Role.READER_PLUS, Role.WRITER, Role.MANAGER
C, MG, RD = ActionClass.CRYPTO, ActionClass.MANAGE, ActionClass.READ


def _a(name: str, role: Role | None, cls: ActionClass, event: str | None = None, **kw: Any) -> Action:
    return Action(name, event or name, role, cls, **kw)


_ALL: tuple[Action, ...] = (
    # keys
    _a("kms.secrets.create", W, MG),
    _a("kms.secrets.list", R, RD),
    _a("kms.secrets.head", R, RD),
    _a("kms.secrets-with-policy-overrides.create", M, MG, source="I"),
    _a("kms.secrets.read", RP, RD),
    _a("kms.secrets.patch", M, MG),
    _a("kms.secrets.delete", M, MG),
    _a("kms.secrets.readmetadata", R, RD, "kms.secrets-metadata.read"),
    _a("kms.secrets.purge", None, MG, key_purge=True),
    _a("kms.secrets.restore", M, MG),
    _a("kms.secrets.listkeyversions", R, RD, "kms.secrets-key-versions.list"),
    _a("kms.secrets.wrap", R, C),
    _a("kms.secrets.unwrap", R, C),
    _a("kms.secrets.rewrap", R, C),
    _a("kms.secrets.rotate", W, MG),
    _a("kms.secrets.setkeyfordeletion", W, MG),
    _a("kms.secrets.unsetkeyfordeletion", W, MG),
    _a("kms.secrets.enable", M, MG),
    _a("kms.secrets.disable", M, MG),
    _a("kms.secrets.sync", W, MG),
    _a("kms.secrets.eventack", R, MG, "kms.secrets-event.ack", source="I"),
    _a("kms.secrets.createalias", W, MG, "kms.secrets-alias.create"),
    _a("kms.secrets.deletealias", W, MG, "kms.secrets-alias.delete", source="I"),
    # policies
    _a("kms.policies.write", M, MG),
    _a("kms.policies.read", M, RD),
    _a("kms.instancepolicies.write", M, MG, "kms.instance-policies.write"),
    _a("kms.instancepolicies.read", M, RD, "kms.instance-policies.read"),
    _a("kms.instance.readallowedipport", M, RD, "kms.instance-allowed-ip-port.read"),
    # import tokens
    _a("kms.importtoken.create", W, MG, "kms.import-token.create"),
    _a("kms.importtoken.read", W, RD, "kms.import-token.read"),
    # registrations
    _a("kms.registrations.create", R, MG),
    _a("kms.registrations.merge", R, MG),
    _a("kms.registrations.write", R, MG),
    _a("kms.registrations.delete", R, MG),
    _a("kms.registrations.list", R, RD),
    # key rings
    _a("kms.keyrings.list", R, RD, "kms.key-rings.list"),
    _a("kms.keyrings.create", W, MG, "kms.key-rings.create"),
    _a("kms.keyrings.delete", M, MG, "kms.key-rings.delete"),
    # hsmbridge's own
    _a("hsmbridge.hsm.read", M, RD, source="I"),
    # Huawei Cloud KMS v1.0 (hsmbridge/huawei/): one action per API, audited as
    # ``huawei.kms.<the API's URI action>``; roles follow the Key Protect columns above for the same
    # kind of work (reads and crypto: Reader; create/import: Writer; state changes, deletion:
    # Manager) [I].
    *(
        _a(f"kms:{name}", role, cls, f"huawei.kms.{uri}", source="I")
        for name, uri, role, cls in (
            ("createKey", "create-key", W, MG),
            ("describeKey", "describe-key", R, RD),
            ("listKeys", "list-keys", R, RD),
            ("enableKey", "enable-key", M, MG),
            ("disableKey", "disable-key", M, MG),
            ("scheduleKeyDeletion", "schedule-key-deletion", M, MG),
            ("cancelKeyDeletion", "cancel-key-deletion", M, MG),
            ("updateKeyAlias", "update-key-alias", W, MG),
            ("updateKeyDescription", "update-key-description", W, MG),
            ("getParametersForImport", "get-parameters-for-import", W, MG),
            ("importKeyMaterial", "import-key-material", W, MG),
            ("deleteImportedKeyMaterial", "delete-imported-key-material", M, MG),
            ("createDataKey", "create-datakey", R, C),
            ("createDataKeyWithoutPlaintext", "create-datakey-without-plaintext", R, C),
            ("encryptDataKey", "encrypt-datakey", R, C),
            ("decryptDataKey", "decrypt-datakey", R, C),
            ("encryptData", "encrypt-data", R, C),
            ("decryptData", "decrypt-data", R, C),
            ("genRandom", "gen-random", R, C),
        )
    ),
    # pushing keys to cloud KMSs (hsmbridge/push/): connections hold cloud credentials, so only
    # Managers see or change them; any Reader may see which cloud keys hsmbridge feeds [I]
    _a("hsmbridge.push.connections.create", M, MG, source="I"),
    _a("hsmbridge.push.connections.read", M, RD, source="I"),
    _a("hsmbridge.push.connections.delete", M, MG, source="I"),
    _a("hsmbridge.push.connections.test", M, MG, source="I"),
    _a("hsmbridge.push.keys.create", M, MG, source="I"),
    _a("hsmbridge.push.keys.read", R, RD, source="I"),
    _a("hsmbridge.push.keys.delete", M, MG, source="I"),
    _a("hsmbridge.push.keys.import", M, MG, source="I"),
)

#: IAM action name → Action.
ACTIONS: Mapping[str, Action] = {a.name: a for a in _ALL}


@dataclass(frozen=True, slots=True)
class Endpoint:
    number: str
    method: str
    #: path template; ``{x}`` matches one segment, ``{x:path}`` the rest of the path
    path: str
    #: None: chosen by the ``action`` query parameter (E6)
    action: str | None


#: Spec §3, in spec order. E6 dispatches on ``?action=``; E33 is an inference (see above).
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("E1", "POST", "/api/v2/keys", "kms.secrets.create"),
    Endpoint("E2", "GET", "/api/v2/keys", "kms.secrets.list"),
    Endpoint("E3", "HEAD", "/api/v2/keys", "kms.secrets.head"),
    Endpoint("E4", "POST", "/api/v2/keys_with_policy_overrides", "kms.secrets-with-policy-overrides.create"),
    Endpoint("E5", "GET", "/api/v2/keys/{id}", "kms.secrets.read"),
    Endpoint("E6", "POST", "/api/v2/keys/{id}", None),
    Endpoint("E7", "PATCH", "/api/v2/keys/{id}", "kms.secrets.patch"),
    Endpoint("E8", "DELETE", "/api/v2/keys/{id}", "kms.secrets.delete"),
    Endpoint("E9", "GET", "/api/v2/keys/{id}/metadata", "kms.secrets.readmetadata"),
    Endpoint("E10", "DELETE", "/api/v2/keys/{id}/purge", "kms.secrets.purge"),
    Endpoint("E11", "POST", "/api/v2/keys/{id}/restore", "kms.secrets.restore"),
    Endpoint("E12", "GET", "/api/v2/keys/{id}/versions", "kms.secrets.listkeyversions"),
    Endpoint("E13", "POST", "/api/v2/keys/{id}/actions/wrap", "kms.secrets.wrap"),
    Endpoint("E14", "POST", "/api/v2/keys/{id}/actions/unwrap", "kms.secrets.unwrap"),
    Endpoint("E15", "POST", "/api/v2/keys/{id}/actions/rewrap", "kms.secrets.rewrap"),
    Endpoint("E16", "POST", "/api/v2/keys/{id}/actions/rotate", "kms.secrets.rotate"),
    Endpoint("E17", "POST", "/api/v2/keys/{id}/actions/setKeyForDeletion", "kms.secrets.setkeyfordeletion"),
    Endpoint(
        "E18", "POST", "/api/v2/keys/{id}/actions/unsetKeyForDeletion", "kms.secrets.unsetkeyfordeletion"
    ),
    Endpoint("E19", "POST", "/api/v2/keys/{id}/actions/enable", "kms.secrets.enable"),
    Endpoint("E20", "POST", "/api/v2/keys/{id}/actions/disable", "kms.secrets.disable"),
    Endpoint("E21", "POST", "/api/v2/keys/{id}/actions/sync", "kms.secrets.sync"),
    Endpoint("E22", "PUT", "/api/v2/keys/{id}/policies", "kms.policies.write"),
    Endpoint("E23", "GET", "/api/v2/keys/{id}/policies", "kms.policies.read"),
    Endpoint("E24", "PUT", "/api/v2/instance/policies", "kms.instancepolicies.write"),
    Endpoint("E25", "GET", "/api/v2/instance/policies", "kms.instancepolicies.read"),
    Endpoint("E26", "GET", "/api/v2/instance/allowed_ip_port", "kms.instance.readallowedipport"),
    Endpoint("E27", "POST", "/api/v2/import_token", "kms.importtoken.create"),
    Endpoint("E28", "GET", "/api/v2/import_token", "kms.importtoken.read"),
    Endpoint("E29", "POST", "/api/v2/keys/{id}/registrations/{crn:path}", "kms.registrations.create"),
    Endpoint("E30", "PATCH", "/api/v2/keys/{id}/registrations/{crn:path}", "kms.registrations.merge"),
    Endpoint("E31", "PUT", "/api/v2/keys/{id}/registrations/{crn:path}", "kms.registrations.write"),
    Endpoint("E32", "DELETE", "/api/v2/keys/{id}/registrations/{crn:path}", "kms.registrations.delete"),
    Endpoint("E33", "POST", "/api/v2/keys/{id}/registrations", "kms.registrations.write"),
    Endpoint("E34", "GET", "/api/v2/keys/{id}/registrations", "kms.registrations.list"),
    Endpoint("E35", "GET", "/api/v2/keys/registrations", "kms.registrations.list"),
    Endpoint("E36", "POST", "/api/v2/event_ack", "kms.secrets.eventack"),
    Endpoint("E37", "POST", "/api/v2/keys/{id}/aliases/{alias}", "kms.secrets.createalias"),
    Endpoint("E38", "DELETE", "/api/v2/keys/{id}/aliases/{alias}", "kms.secrets.deletealias"),
    Endpoint("E39", "GET", "/api/v2/key_rings", "kms.keyrings.list"),
    Endpoint("E40", "POST", "/api/v2/key_rings/{key_ring_id}", "kms.keyrings.create"),
    Endpoint("E41", "DELETE", "/api/v2/key_rings/{key_ring_id}", "kms.keyrings.delete"),
)

#: E6 ``POST /api/v2/keys/{id}?action=…`` (deprecated): the same actions as the per-action routes.
DEPRECATED_KEY_ACTIONS: Mapping[str, str] = {
    "disable": "kms.secrets.disable",
    "enable": "kms.secrets.enable",
    "restore": "kms.secrets.restore",
    "rewrap": "kms.secrets.rewrap",
    "rotate": "kms.secrets.rotate",
    "setKeyForDeletion": "kms.secrets.setkeyfordeletion",
    "unsetKeyForDeletion": "kms.secrets.unsetkeyfordeletion",
    "unwrap": "kms.secrets.unwrap",
    "wrap": "kms.secrets.wrap",
}

_SERVICE = "/hsmbridge.v1."
#: gRPC full method name → IAM action. Two methods depend on the request (see `rpc_action`):
#: SetKeyState is enable or disable (both Manager, so the entry here is already the right
#: decision), and each CryptoStream message is a wrap, unwrap or rewrap batch — the entry here
#: (unwrap, the one that releases plaintext) gates opening the stream; every message is then
#: authorised by its own action.
RPC_ACTIONS: Mapping[str, str] = {
    _SERVICE + "KeyService/CreateKey": "kms.secrets.create",
    _SERVICE + "KeyService/ImportKey": "kms.secrets.create",
    # GetKey returns metadata only; the payload has its own RPC
    _SERVICE + "KeyService/GetKey": "kms.secrets.readmetadata",
    _SERVICE + "KeyService/GetKeyPayload": "kms.secrets.read",
    _SERVICE + "KeyService/ListKeys": "kms.secrets.list",
    _SERVICE + "KeyService/RotateKey": "kms.secrets.rotate",
    _SERVICE + "KeyService/SetKeyState": "kms.secrets.disable",
    _SERVICE + "KeyService/DeleteKey": "kms.secrets.delete",
    _SERVICE + "KeyService/ListKeyVersions": "kms.secrets.listkeyversions",
    _SERVICE + "CryptoService/Wrap": "kms.secrets.wrap",
    _SERVICE + "CryptoService/Unwrap": "kms.secrets.unwrap",
    _SERVICE + "CryptoService/Rewrap": "kms.secrets.rewrap",
    _SERVICE + "CryptoService/WrapBatch": "kms.secrets.wrap",
    _SERVICE + "CryptoService/UnwrapBatch": "kms.secrets.unwrap",
    _SERVICE + "CryptoService/RewrapBatch": "kms.secrets.rewrap",
    _SERVICE + "CryptoService/CryptoStream": "kms.secrets.unwrap",
    _SERVICE + "ImportTokenService/CreateImportToken": "kms.importtoken.create",
    _SERVICE + "ImportTokenService/GetImportToken": "kms.importtoken.read",
    _SERVICE + "HsmService/GetHsmInfo": "hsmbridge.hsm.read",
    # bring-your-own-key as Huawei KMS models it (core/external_keys.py): the same actions as the
    # Huawei routes, so both transports are authorised and audited alike
    _SERVICE + "KeyService/CreateExternalKey": "kms:createKey",
    _SERVICE + "KeyService/ImportKeyMaterial": "kms:importKeyMaterial",
    _SERVICE + "KeyService/DeleteKeyMaterial": "kms:deleteImportedKeyMaterial",
    _SERVICE + "ImportTokenService/GetImportParameters": "kms:getParametersForImport",
    _SERVICE + "PushService/CreateConnection": "hsmbridge.push.connections.create",
    _SERVICE + "PushService/ListConnections": "hsmbridge.push.connections.read",
    _SERVICE + "PushService/GetConnection": "hsmbridge.push.connections.read",
    _SERVICE + "PushService/DeleteConnection": "hsmbridge.push.connections.delete",
    _SERVICE + "PushService/TestConnection": "hsmbridge.push.connections.test",
    _SERVICE + "PushService/CreateCloudKey": "hsmbridge.push.keys.create",
    _SERVICE + "PushService/ListCloudKeys": "hsmbridge.push.keys.read",
    _SERVICE + "PushService/GetCloudKey": "hsmbridge.push.keys.read",
    _SERVICE + "PushService/DeleteCloudKey": "hsmbridge.push.keys.delete",
    _SERVICE + "PushService/ImportMaterial": "hsmbridge.push.keys.import",
}
_SET_KEY_STATE = _SERVICE + "KeyService/SetKeyState"
_KEY_STATE_ACTIVE = 1  # keys.proto KeyState.KEY_STATE_ACTIVE
_CRYPTO_STREAM = _SERVICE + "CryptoService/CryptoStream"
_STREAM_BATCHES = {"wrap": "kms.secrets.wrap", "unwrap": "kms.secrets.unwrap", "rewrap": "kms.secrets.rewrap"}

#: Methods that need no credentials: load balancers probe health, and the schema is public.
PUBLIC_RPCS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)


#: Methods that carry another protocol's request and are authorised by it: RestGateway/Handle
#: forwards an HTTP request whose Authorization header the REST facade checks (against the REST
#: endpoint's action). Gating them again here would need a second credential. Serve them only on
#: a listener restricted to the gateway (unix socket 0600 or mTLS): the forwarded client address
#: ends up in audit events.
DELEGATED_RPCS = frozenset({"/hsmbridge.v1.RestGateway/Handle"})


def _compile(template: str) -> re.Pattern[str]:
    out = []
    for part in re.split(r"(\{[^}]*\})", template):
        if part.startswith("{"):
            out.append(".+" if part.endswith(":path}") else "[^/]+")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


# Fewer parameters first, so GET /api/v2/keys/registrations (E35) wins over GET /api/v2/keys/{id}.
_ROUTES = sorted(
    ((e.method, _compile(e.path), e) for e in ENDPOINTS),
    key=lambda r: r[2].path.count("{"),
)


@functools.lru_cache(maxsize=4096)  # a scan of every route's pattern; hot paths repeat
def endpoint_for(method: str, path: str) -> Endpoint | None:
    """The spec endpoint a concrete request path belongs to (percent-decoded or not)."""
    method = method.upper()
    path = path.rstrip("/") or "/"
    for m, pattern, endpoint in _ROUTES:
        if m == method and pattern.fullmatch(path):
            return endpoint
    return None


def rest_action(method: str, path: str, action_param: str | None = None) -> Action | None:
    """The IAM action of a REST request, or None for a path outside the API (a 404 anyway).
    E6 resolves through its ``action`` query parameter; an unknown value gives None (the handler
    answers 400)."""
    endpoint = endpoint_for(method, path)
    if endpoint is None:
        return None
    name = endpoint.action
    if name is None:
        name = DEPRECATED_KEY_ACTIONS.get(action_param or "")
        if name is None:
            return None
    return ACTIONS[name]


def rpc_action(method: str, request: object | None = None) -> Action:
    """The IAM action of a gRPC method — of one request message where that decides it
    (SetKeyState, each CryptoStream message). Unknown methods are a wiring bug: InternalError
    (which denies), never a silent allow."""
    name = RPC_ACTIONS.get(method)
    if name is None:
        raise InternalError("no authorization rule for this method")
    if request is not None:
        if method == _SET_KEY_STATE and getattr(request, "state", None) == _KEY_STATE_ACTIVE:
            name = "kms.secrets.enable"
        elif method == _CRYPTO_STREAM:
            which = request.WhichOneof("batch")  # type: ignore[attr-defined]
            name = _STREAM_BATCHES.get(which or "", name)
    return ACTIONS[name]


class AuthzConfig(BaseModel):
    """``[security.authz]``: per-action minimum-role overrides, e.g.
    ``overrides = { "kms.secrets.wrap" = "Writer" }``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    overrides: dict[str, str] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _valid(cls, value: dict[str, str]) -> dict[str, str]:
        for action, role in value.items():
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r} in security.authz.overrides")
            if ACTIONS[action].key_purge:
                raise ValueError("kms.secrets.purge always needs the KeyPurge grant; it cannot be overridden")
            if Role.parse(role) is None:
                raise ValueError(f"unknown role {role!r} for {action}")
        return value


class Authorizer:
    """The role check, with the table above plus any configured overrides."""

    def __init__(self, config: AuthzConfig | None = None) -> None:
        table = dict(ACTIONS)
        for name, role in (config.overrides if config else {}).items():
            table[name] = replace(table[name], min_role=Role.parse(role))
        self.actions: Mapping[str, Action] = table

    def action(self, action: str | Action) -> Action:
        name = action if isinstance(action, str) else action.name
        try:
            return self.actions[name]
        except KeyError:
            raise InternalError("no authorization rule for this action") from None

    def allows(self, identity: Identity, action: str | Action) -> bool:
        """Does the identity's role (or grant) cover the action? Instances are not considered."""
        rule = self.action(action)
        if rule.key_purge:
            return identity.key_purge
        top = identity.top_role
        return rule.min_role is not None and top is not None and top >= rule.min_role

    def authorize(self, identity: Identity, action: str | Action, instance: str) -> Action:
        """Allow, returning the action (its event and class feed audit and rate limiting), or raise
        `PermissionDenied`. The instance is checked first: an identity never learns anything about
        an instance it may not use."""
        rule = self.action(action)
        if not identity.may_use(instance):
            raise PermissionDenied("the caller may not use this instance")
        if not self.allows(identity, rule):
            raise PermissionDenied(f"the caller's roles do not allow {rule.name}")
        return rule


_DEFAULT = Authorizer()


def authorize(identity: Identity, action: str | Action, instance: str) -> Action:
    """`Authorizer.authorize` with IBM's table and no overrides."""
    return _DEFAULT.authorize(identity, action, instance)
