"""Key policies (E22/E23) and instance policies (E24–E26) — transport-free.

Key policies. A key carries at most two: ``rotation`` and ``dualAuthDelete``. Their *values* live
on the `Key` (``key.rotation``, ``key.dual_auth.enabled``) because the lifecycle code reads them
there — dual authorization gates DELETE, rotation drives the scheduler. What the E23
representation adds (a policy ID, who set it and when) lives in the store's ``key_policies``
rows. A policy a key got at creation (from an instance policy or a create-time override) has no
row until its first PUT, so it is shown as created with the key, by the key's creator. Policy
IDs are derived from (tenant, key, type) and shaped as v4 UUIDs, so the same policy shows the
same ID before and after its first PUT without a write on read.

Writes go read → check → optimistic `update_key` (retried on ``CONCURRENT_UPDATE``), like every
key mutation: a policy change racing a delete either lands before it or sees the deleted key.
Rules (spec E22, §4.2): the key must be a root key in the Active (1) state (``INVALID_STATE``,
which the facade answers as 422 ``KEY_INVALID_STATE_ERR``); a deleted key is 410;
``interval_month`` is 1–12; only root keys *generated* by the service take a rotation policy
(Key Protect: "You can create a rotation policy only for root keys that are generated").

Instance policies. Six types, each one row per tenant (replacing a policy keeps its creation).
Three are **enforced** here:
- ``keyCreateImportAccess``: an admission rule refuses keys of a kind the policy forbids with
  409 ``KEY_CREATE_IMPORT_ACCESS_ERR``. Omitted attributes take Key Protect's defaults (all
  four kinds allowed, ``enforce_token`` off). ``enforce_token`` means "no key material without
  an import token": a plain ``payload`` import is refused — for standard keys too, which can
  never use a token (their import is then impossible, as the attribute's wording implies).
  `require_secure_import` exposes the same rule for rotate and restore, which Key Protect
  documents as affected too.
- ``dualAuthDelete`` and ``rotation``: applied to keys created *after* the policy is set, unless
  the create request overrides them (E4). Rotation only reaches generated root keys.
``allowedNetwork``, ``allowedIP`` and ``metrics`` are validated and stored; an enabled
``allowedIP`` policy makes E26 report `PRIVATE_ENDPOINT_PORT`. Nothing else routes on them: this
facade has no public/private endpoint split.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from hsmbridge.core.clock import Clock
from hsmbridge.core.keys import KeyService, KeySpec
from hsmbridge.core.model import DualAuthDelete, Key, KeyState, RotationPolicy
from hsmbridge.core.principal import CallContext
from hsmbridge.core.store.base import InstancePolicy, KeyPolicyRecord, Store
from hsmbridge.errors import Conflict, Gone, InvalidInput, Reason

_MAX_RETRIES = 3

# --- key policies ---------------------------------------------------------------------------

ROTATION = "rotation"
DUAL_AUTH_DELETE = "dualAuthDelete"
#: Key policy types, in the order E23 lists them (rotation first: the deprecated Go SDK
#: ``GetPolicy`` returns the first resource and documents it as the rotation policy).
KEY_POLICY_TYPES: tuple[str, ...] = (ROTATION, DUAL_AUTH_DELETE)
MIN_INTERVAL_MONTH = 1
MAX_INTERVAL_MONTH = 12

_POLICY_ID_NAMESPACE = uuid.UUID("6f1c8e0a-3d4b-4c47-9a55-0b9f3c2d7e11")


def policy_id(tenant: str, key_id: str, policy_type: str) -> str:
    """A stable ID for a key's policy, formatted as a v4 UUID (clients expect one)."""
    digest = hashlib.sha256(f"{_POLICY_ID_NAMESPACE}:{tenant}:{key_id}:{policy_type}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def validate_interval_month(value: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (MIN_INTERVAL_MONTH <= value <= MAX_INTERVAL_MONTH)
    ):
        raise InvalidInput(
            f"The field 'interval_month' must be: an integer between {MIN_INTERVAL_MONTH} and "
            f"{MAX_INTERVAL_MONTH}",
            reason=Reason.INVALID_FIELD,
            target="interval_month",
        )
    return value


@dataclass(frozen=True, slots=True)
class RotationChange:
    """A rotation policy as a PUT states it. `enabled` None means "not said": a request that
    gives only ``interval_month`` (the Go SDK's) enables the policy."""

    enabled: bool | None = None
    interval_month: int | None = None


@dataclass(frozen=True, slots=True)
class KeyPolicyChanges:
    rotation: RotationChange | None = None
    dual_auth_delete: bool | None = None

    @property
    def types(self) -> list[str]:
        changed = []
        if self.rotation is not None:
            changed.append(ROTATION)
        if self.dual_auth_delete is not None:
            changed.append(DUAL_AUTH_DELETE)
        return changed


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """One key policy as E23 shows it: the value (from the key) plus its metadata."""

    policy_type: str
    id: str
    tenant: str
    key_id: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    rotation: RotationPolicy | None = None
    dual_auth_enabled: bool | None = None


class KeyPolicyService:
    def __init__(self, store: Store, keys: KeyService, clock: Clock) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock

    def get(self, ctx: CallContext, key_id_or_alias: str) -> tuple[Key, list[KeyPolicy]]:
        """The key (any state: E23 documents no 410) and its policies, rotation first."""
        key = self._keys.get(ctx, key_id_or_alias)
        return key, self.policies_of(key)

    def policies_of(self, key: Key) -> list[KeyPolicy]:
        records = {r.policy_type: r for r in self._store.get_key_policy_records(key.tenant, key.id)}
        policies: list[KeyPolicy] = []
        if key.rotation is not None:
            policies.append(self._view(key, ROTATION, records.get(ROTATION)))
        # A dual-auth policy exists once enabled, and stays visible (as disabled) once set by PUT.
        if key.dual_auth.enabled or DUAL_AUTH_DELETE in records:
            policies.append(self._view(key, DUAL_AUTH_DELETE, records.get(DUAL_AUTH_DELETE)))
        return policies

    @staticmethod
    def _view(key: Key, policy_type: str, record: KeyPolicyRecord | None) -> KeyPolicy:
        if record is None:
            record = KeyPolicyRecord(
                key.tenant,
                key.id,
                policy_type,
                policy_id(key.tenant, key.id, policy_type),
                key.created_at,
                key.created_by,
                key.created_at,
                key.created_by,
            )
        return KeyPolicy(
            policy_type=policy_type,
            id=record.id,
            tenant=key.tenant,
            key_id=key.id,
            created_at=record.created_at,
            created_by=record.created_by,
            updated_at=record.updated_at,
            updated_by=record.updated_by,
            rotation=key.rotation if policy_type == ROTATION else None,
            dual_auth_enabled=key.dual_auth.enabled if policy_type == DUAL_AUTH_DELETE else None,
        )

    def set(self, ctx: CallContext, key_id_or_alias: str, changes: KeyPolicyChanges) -> list[KeyPolicy]:
        """Apply `changes`; returns the changed policies, rotation first."""
        if not changes.types:
            raise InvalidInput(
                "A policy resource must set 'rotation' or 'dualAuthDelete'", reason=Reason.BAD_BODY
            )
        for attempt in range(_MAX_RETRIES):
            key = self._keys.get(ctx, key_id_or_alias)
            self._require_settable(key)
            now = self._clock.now()
            self._apply(key, changes)
            key.updated_at = now
            existing = {r.policy_type: r for r in self._store.get_key_policy_records(ctx.tenant, key.id)}
            try:
                with self._store.transaction() as tx:
                    tx.update_key(key)
                    for policy_type in changes.types:
                        previous = existing.get(policy_type)
                        tx.put_key_policy_record(
                            KeyPolicyRecord(
                                tenant=ctx.tenant,
                                key_id=key.id,
                                policy_type=policy_type,
                                id=policy_id(ctx.tenant, key.id, policy_type),
                                created_at=previous.created_at if previous else now,
                                created_by=previous.created_by if previous else ctx.actor,
                                updated_at=now,
                                updated_by=ctx.actor,
                            )
                        )
            except Conflict as exc:
                if exc.reason is not Reason.CONCURRENT_UPDATE or attempt == _MAX_RETRIES - 1:
                    raise
                continue
            self._keys.invalidate(key)
            policies = {p.policy_type: p for p in self.policies_of(key)}
            return [policies[t] for t in changes.types if t in policies]
        raise AssertionError("unreachable")

    @staticmethod
    def _require_settable(key: Key) -> None:
        if key.state is KeyState.DESTROYED:
            raise Gone(
                "Key has already been deleted. Delete references to this key.", reason=Reason.KEY_DELETED
            )
        if key.extractable or key.state is not KeyState.ACTIVE:
            raise _not_a_policy_key()

    @staticmethod
    def _apply(key: Key, changes: KeyPolicyChanges) -> None:
        if changes.rotation is not None:
            if key.imported:
                raise _rotation_needs_generated_material()
            interval = changes.rotation.interval_month
            if interval is not None:
                validate_interval_month(interval)
            elif key.rotation is not None:
                interval = key.rotation.interval_month
            enabled = True if changes.rotation.enabled is None else changes.rotation.enabled
            if enabled and interval is None:
                raise InvalidInput(
                    "The field 'interval_month' is required.",
                    reason=Reason.MISSING_FIELD,
                    target="interval_month",
                )
            key.rotation = RotationPolicy(enabled=enabled, interval_month=interval)
        if changes.dual_auth_delete is not None:
            if not changes.dual_auth_delete:
                key.dual_auth = DualAuthDelete(enabled=False)  # a pending authorization goes too
            elif not key.dual_auth.enabled:
                key.dual_auth = DualAuthDelete(enabled=True)


def _not_a_policy_key() -> Conflict:
    return Conflict(
        "A key must be a root key (non-extractable) in the Activated (1) state.",
        reason=Reason.INVALID_STATE,
    )


def _rotation_needs_generated_material() -> InvalidInput:
    return InvalidInput(
        "The field 'rotation' must be: set on root keys generated by the service only; "
        "a key with imported material is rotated with new material instead",
        reason=Reason.INVALID_FIELD,
        target="rotation",
    )


def check_create_time_rotation(ctx: CallContext, spec: KeySpec) -> KeySpec:
    """The `KeyService` admission rule for a rotation policy given at creation (E4 overrides):
    the key must be able to take it exactly as a PUT on the key would require — a root key
    (``INVALID_STATE``, which the facade answers 422 as on PUT) with generated material."""
    if spec.rotation is None:
        return spec
    if spec.extractable:
        raise _not_a_policy_key()
    if spec.payload is not None or spec.secure_import is not None:
        raise _rotation_needs_generated_material()
    return spec


# --- instance policies ----------------------------------------------------------------------

ALLOWED_NETWORK = "allowedNetwork"
ALLOWED_IP = "allowedIP"
KEY_CREATE_IMPORT_ACCESS = "keyCreateImportAccess"
METRICS = "metrics"
#: E24's ``policy`` values, in the order GET lists them.
INSTANCE_POLICY_TYPES: tuple[str, ...] = (
    ALLOWED_NETWORK,
    DUAL_AUTH_DELETE,
    ALLOWED_IP,
    KEY_CREATE_IMPORT_ACCESS,
    METRICS,
    ROTATION,
)
#: The attribute names each type accepts; anything else is an unknown field.
INSTANCE_POLICY_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    ALLOWED_NETWORK: frozenset({"allowed_network"}),
    DUAL_AUTH_DELETE: frozenset(),
    ALLOWED_IP: frozenset({"allowed_ip"}),
    KEY_CREATE_IMPORT_ACCESS: frozenset(
        {"create_root_key", "create_standard_key", "import_root_key", "import_standard_key", "enforce_token"}
    ),
    METRICS: frozenset(),
    ROTATION: frozenset({"interval_month"}),
}
#: Key Protect's defaults for omitted keyCreateImportAccess attributes.
KEY_CREATE_IMPORT_ACCESS_DEFAULTS: Mapping[str, bool] = {
    "create_root_key": True,
    "create_standard_key": True,
    "import_root_key": True,
    "import_standard_key": True,
    "enforce_token": False,
}
ALLOWED_NETWORKS = ("public-and-private", "private-only")
MAX_ALLOWED_IPS = 1000
#: What E26 reports while an allowedIP policy is enabled. One port for every instance: there is
#: no per-instance private endpoint to allocate here. Deployments may override it at start-up.
PRIVATE_ENDPOINT_PORT = 8888


@dataclass(frozen=True, slots=True)
class InstancePolicySetting:
    """One E24 resource after wire parsing: attribute values already have their JSON types."""

    policy_type: str
    enabled: bool
    attributes: Mapping[str, Any] | None = None


def _attribute_error(name: str, expectation: str) -> InvalidInput:
    return InvalidInput(
        f"The field '{name}' must be: {expectation}", reason=Reason.INVALID_FIELD, target=name
    )


def _no_attributes_when_disabled(setting: InstancePolicySetting, name: str) -> None:
    if setting.attributes:
        raise _attribute_error(name, "omitted when the policy is being disabled")


def normalise_instance_policy(setting: InstancePolicySetting) -> dict[str, Any]:
    """Validate one policy and return the document to store: ``{"enabled", "attributes"?}``."""
    kind, enabled = setting.policy_type, setting.enabled
    if kind not in INSTANCE_POLICY_ATTRIBUTES:
        raise _attribute_error("policy_type", "one of " + ", ".join(INSTANCE_POLICY_TYPES))
    attributes = dict(setting.attributes or {})
    unknown = sorted(set(attributes) - INSTANCE_POLICY_ATTRIBUTES[kind])
    if unknown:
        raise InvalidInput(f'json: unknown field "{unknown[0]}"', reason=Reason.BAD_BODY)
    out: dict[str, Any] = {"enabled": enabled}
    if kind == ALLOWED_NETWORK:
        network = attributes.get("allowed_network")
        if network is None:
            if enabled:
                raise InvalidInput(
                    "The field 'allowed_network' is required.",
                    reason=Reason.MISSING_FIELD,
                    target="allowed_network",
                )
        elif network not in ALLOWED_NETWORKS:
            raise _attribute_error("allowed_network", "one of " + ", ".join(ALLOWED_NETWORKS))
        else:
            out["attributes"] = {"allowed_network": network}
    elif kind == ALLOWED_IP:
        if not enabled:
            _no_attributes_when_disabled(setting, "allowed_ip")
        else:
            out["attributes"] = {"allowed_ip": _validate_allowed_ips(attributes.get("allowed_ip"))}
    elif kind == KEY_CREATE_IMPORT_ACCESS:
        if not enabled:
            _no_attributes_when_disabled(setting, "attributes")
        else:
            for name, value in attributes.items():
                if not isinstance(value, bool):
                    raise _attribute_error(name, "a boolean")
            out["attributes"] = {**KEY_CREATE_IMPORT_ACCESS_DEFAULTS, **attributes}
    elif kind == ROTATION:
        interval = attributes.get("interval_month")
        if interval is None:
            if enabled:
                raise InvalidInput(
                    "The field 'interval_month' is required.",
                    reason=Reason.MISSING_FIELD,
                    target="interval_month",
                )
        else:
            # A disabled policy may keep its interval: Key Protect writes it to new keys in a
            # disabled state, so a later enable on the key has a value to start from.
            out["attributes"] = {"interval_month": validate_interval_month(interval)}
    return out


def _validate_allowed_ips(value: Any) -> list[str]:
    expectation = f"a list of 1 to {MAX_ALLOWED_IPS} IPv4 or IPv6 subnets in CIDR notation"
    if value is None:
        raise InvalidInput(
            "The field 'allowed_ip' is required.", reason=Reason.MISSING_FIELD, target="allowed_ip"
        )
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ALLOWED_IPS:
        raise _attribute_error("allowed_ip", expectation)
    for entry in value:
        if not isinstance(entry, str) or "/" not in entry:
            raise _attribute_error("allowed_ip", expectation)
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise _attribute_error("allowed_ip", expectation) from None
    return list(value)


class InstancePolicyService:
    def __init__(self, store: Store, clock: Clock, *, private_endpoint_port: int = PRIVATE_ENDPOINT_PORT):
        self._store = store
        self._clock = clock
        self.private_endpoint_port = private_endpoint_port

    def policies(self, ctx: CallContext, policy_type: str | None = None) -> list[InstancePolicy]:
        """The tenant's policies in `INSTANCE_POLICY_TYPES` order, optionally one type only."""
        found = {p.policy_type: p for p in self._store.get_instance_policies(ctx.tenant)}
        wanted: Iterable[str] = INSTANCE_POLICY_TYPES if policy_type is None else (policy_type,)
        return [found[t] for t in wanted if t in found]

    def put(self, ctx: CallContext, settings: Sequence[InstancePolicySetting]) -> list[InstancePolicy]:
        """Validate every setting first, then store them all in one transaction."""
        seen: set[str] = set()
        documents: list[tuple[str, dict[str, Any]]] = []
        for setting in settings:
            if setting.policy_type in seen:
                raise InvalidInput(
                    f"The policy '{setting.policy_type}' is given more than once", reason=Reason.BAD_BODY
                )
            seen.add(setting.policy_type)
            documents.append((setting.policy_type, normalise_instance_policy(setting)))
        now = self._clock.now()
        stored = [InstancePolicy(kind, data, now, ctx.actor, now, ctx.actor) for kind, data in documents]
        with self._store.transaction() as tx:
            tx.ensure_tenant(ctx.tenant, now)
            for policy in stored:
                tx.put_instance_policy(ctx.tenant, policy)
        return self.policies(ctx)

    def _enabled(self, policies: Iterable[InstancePolicy], policy_type: str) -> InstancePolicy | None:
        for policy in policies:
            if policy.policy_type == policy_type and policy.data.get("enabled"):
                return policy
        return None

    def allowed_ip_port(self, ctx: CallContext) -> int | None:
        """E26: the private endpoint port while an allowedIP policy is enabled, else None."""
        policies = self._store.get_instance_policies(ctx.tenant)
        return self.private_endpoint_port if self._enabled(policies, ALLOWED_IP) else None

    # -- effects on keys ----------------------------------------------------------------------

    def admit(self, ctx: CallContext, spec: KeySpec) -> KeySpec:
        """The `KeyService` admission rule: refuse what keyCreateImportAccess forbids, then apply
        the dualAuthDelete and rotation instance policies the request does not override."""
        policies = self._store.get_instance_policies(ctx.tenant)
        if not policies:
            return spec
        imported = spec.payload is not None or spec.secure_import is not None
        self._check_access(
            policies, extractable=spec.extractable, imported=imported, secure=spec.secure_import is not None
        )
        changes: dict[str, Any] = {}
        if spec.dual_auth_delete is None and self._enabled(policies, DUAL_AUTH_DELETE):
            changes["dual_auth_delete"] = True
        rotation = self._enabled(policies, ROTATION)
        if spec.rotation is None and rotation is not None and not spec.extractable and not imported:
            interval = rotation.data.get("attributes", {}).get("interval_month")
            changes["rotation"] = RotationPolicy(enabled=True, interval_month=interval)
        return replace(spec, **changes) if changes else spec

    def require_secure_import(self, ctx: CallContext, *, secure: bool) -> None:
        """For rotate and restore with new/re-supplied material: ``enforce_token`` refuses a
        plain payload there too (Key Protect: it "affects imported keys during creation,
        rotation, and restoration")."""
        policy = self._enabled(self._store.get_instance_policies(ctx.tenant), KEY_CREATE_IMPORT_ACCESS)
        if policy is not None and not secure and _access_attributes(policy)["enforce_token"]:
            raise _access_denied("key material must be imported with an import token")

    def _check_access(
        self, policies: Sequence[InstancePolicy], *, extractable: bool, imported: bool, secure: bool
    ) -> None:
        policy = self._enabled(policies, KEY_CREATE_IMPORT_ACCESS)
        if policy is None:
            return
        attributes = _access_attributes(policy)
        kind = ("import_" if imported else "create_") + ("standard_key" if extractable else "root_key")
        if not attributes[kind]:
            raise _access_denied(f"'{kind}' is not allowed")
        if imported and not secure and attributes["enforce_token"]:
            raise _access_denied("key material must be imported with an import token")


def _access_attributes(policy: InstancePolicy) -> dict[str, bool]:
    return {**KEY_CREATE_IMPORT_ACCESS_DEFAULTS, **policy.data.get("attributes", {})}


def _access_denied(detail: str) -> Conflict:
    return Conflict(
        f"KeyCreateImportAccess instance policy does not allow this action: {detail}",
        reason=Reason.KEY_CREATE_IMPORT_ACCESS,
    )
