"""Key policies, instance policies, registrations and key rings through the service layer.

Run on the software fake and on SoftHSM2 (the `services` fixture), with time moved by hand. These
are the rules; the REST tests check how they look on the wire.
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from typing import Any

import pytest
from services import call_context, encrypt_for_import, new_tenant

from hsmbridge.core.clock import FixedClock
from hsmbridge.core.key_rings import MAX_KEY_RINGS
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import DEFAULT_KEY_RING, Key, KeyState, RotationPolicy
from hsmbridge.core.policies import (
    ALLOWED_IP,
    ALLOWED_NETWORK,
    DUAL_AUTH_DELETE,
    KEY_CREATE_IMPORT_ACCESS,
    METRICS,
    PRIVATE_ENDPOINT_PORT,
    ROTATION,
    InstancePolicySetting,
    KeyPolicyChanges,
    RotationChange,
    normalise_instance_policy,
    policy_id,
)
from hsmbridge.core.principal import CallContext
from hsmbridge.core.registrations import CrnPattern, RegistrationPatch, validate_resource_crn
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import KeyQuery, Registration, RegistrationQuery, RegistrationState
from hsmbridge.errors import (
    AlreadyExists,
    Conflict,
    Gone,
    HsmBridgeError,
    InvalidInput,
    NotFound,
    Reason,
)

pytest_plugins = ("services_fixtures",)

CRN = "crn:v1:bluemix:public:cloud-object-storage:global:a/acct:feddecaf-0000-0000-0000-1234567890ab::bucket"


def create(services: Services, ctx: CallContext, name: str = "key", **spec: Any) -> Key:
    return services.keys.create(ctx, KeySpec(name=name, **spec))


def raises(error: type[HsmBridgeError], reason: Reason, target: str | None = None) -> pytest.RaisesExc:
    """`pytest.raises` that also insists on the machine-readable reason (and target)."""
    return pytest.raises(
        error, check=lambda exc: exc.reason is reason and (target is None or exc.target == target)
    )


def instance(
    services: Services, ctx: CallContext, kind: str, enabled: bool = True, **attributes: object
) -> None:
    services.instance_policies.put(ctx, [InstancePolicySetting(kind, enabled, attributes or None)])


# --- key policies --------------------------------------------------------------------------------


def test_setting_both_key_policies_changes_the_key_and_records_who_did_it(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx)
    clock.advance(minutes=5)
    changes = KeyPolicyChanges(rotation=RotationChange(interval_month=3), dual_auth_delete=True)
    policies = services.key_policies.set(ctx, key.id, changes)

    assert [p.policy_type for p in policies] == [ROTATION, DUAL_AUTH_DELETE]
    assert policies[0].rotation == RotationPolicy(enabled=True, interval_month=3)
    assert policies[1].dual_auth_enabled is True
    for policy in policies:
        assert policy.id == policy_id(ctx.tenant, key.id, policy.policy_type)
        assert uuid.UUID(policy.id).version == 4
        assert (policy.created_by, policy.created_at) == (ctx.actor, clock.now())
    stored = services.keys.get(ctx, key.id)
    assert stored.rotation == RotationPolicy(True, 3)
    assert stored.dual_auth.enabled is True
    assert stored.updated_at == clock.now()
    assert services.key_policies.get(ctx, key.id)[1] == policies


def test_a_second_put_keeps_the_policy_id_and_creation(
    services: Services, ctx: CallContext, bob: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx)
    first = services.key_policies.set(
        ctx, key.id, KeyPolicyChanges(rotation=RotationChange(interval_month=1))
    )
    clock.advance(hours=2)
    second = services.key_policies.set(
        bob, key.id, KeyPolicyChanges(rotation=RotationChange(interval_month=12))
    )
    assert second[0].id == first[0].id
    assert (second[0].created_by, second[0].created_at) == (ctx.actor, first[0].created_at)
    assert (second[0].updated_by, second[0].updated_at) == (bob.actor, clock.now())
    assert second[0].rotation == RotationPolicy(True, 12)


@pytest.mark.parametrize("interval", [0, 13, -1, 100])
def test_interval_month_must_be_1_to_12(services: Services, ctx: CallContext, interval: int) -> None:
    key = create(services, ctx)
    with raises(InvalidInput, Reason.INVALID_FIELD, "interval_month"):
        services.key_policies.set(
            ctx, key.id, KeyPolicyChanges(rotation=RotationChange(interval_month=interval))
        )
    assert services.keys.get(ctx, key.id).rotation is None


def test_rotation_enable_disable_keeps_the_interval(services: Services, ctx: CallContext) -> None:
    key = create(services, ctx)
    with raises(InvalidInput, Reason.MISSING_FIELD, "interval_month"):
        services.key_policies.set(ctx, key.id, KeyPolicyChanges(rotation=RotationChange(enabled=True)))
    services.key_policies.set(ctx, key.id, KeyPolicyChanges(rotation=RotationChange(True, 6)))
    off = services.key_policies.set(ctx, key.id, KeyPolicyChanges(rotation=RotationChange(enabled=False)))
    assert off[0].rotation == RotationPolicy(False, 6)
    on = services.key_policies.set(ctx, key.id, KeyPolicyChanges(rotation=RotationChange(enabled=True)))
    assert on[0].rotation == RotationPolicy(True, 6)


def test_key_policies_need_an_active_root_key(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    dual = KeyPolicyChanges(dual_auth_delete=True)
    standard = create(services, ctx, extractable=True)
    with raises(Conflict, Reason.INVALID_STATE):
        services.key_policies.set(ctx, standard.id, dual)

    suspended = create(services, ctx)
    services.keys.disable(ctx, suspended.id)
    with raises(Conflict, Reason.INVALID_STATE):
        services.key_policies.set(ctx, suspended.id, dual)

    expired = create(services, ctx, expires_at=clock.now() + timedelta(minutes=1))
    clock.advance(minutes=2)
    with raises(Conflict, Reason.INVALID_STATE):
        services.key_policies.set(ctx, expired.id, dual)

    deleted = create(services, ctx)
    services.keys.delete(ctx, deleted.id)
    with raises(Gone, Reason.KEY_DELETED):
        services.key_policies.set(ctx, deleted.id, dual)
    assert services.key_policies.get(ctx, deleted.id)[1] == []  # still readable

    with raises(NotFound, Reason.KEY_NOT_FOUND):
        services.key_policies.set(ctx, str(uuid.uuid4()), dual)


def test_only_generated_root_keys_take_a_rotation_policy(services: Services, ctx: CallContext) -> None:
    imported = create(services, ctx, payload=os.urandom(32))
    with raises(InvalidInput, Reason.INVALID_FIELD, "rotation"):
        services.key_policies.set(
            ctx, imported.id, KeyPolicyChanges(rotation=RotationChange(interval_month=2))
        )
    # dual authorization is fine on an imported root key
    assert services.key_policies.set(ctx, imported.id, KeyPolicyChanges(dual_auth_delete=True))


def test_a_dual_auth_key_policy_gates_delete_and_disabling_it_clears_a_pending_authorization(
    services: Services, ctx: CallContext, bob: CallContext
) -> None:
    key = create(services, ctx)
    services.key_policies.set(ctx, key.id, KeyPolicyChanges(dual_auth_delete=True))
    with raises(Conflict, Reason.AUTHORIZATIONS_NOT_MET):
        services.keys.delete(ctx, key.id)
    services.keys.set_key_for_deletion(ctx, key.id)

    # enabling again keeps the pending authorization
    services.key_policies.set(ctx, key.id, KeyPolicyChanges(dual_auth_delete=True))
    assert services.keys.get(ctx, key.id).dual_auth.set_by == ctx.actor
    # disabling drops it, and the key deletes with one principal
    services.key_policies.set(ctx, key.id, KeyPolicyChanges(dual_auth_delete=False))
    assert services.keys.get(ctx, key.id).dual_auth.set_by is None
    policies = services.key_policies.get(ctx, key.id)[1]
    assert [(p.policy_type, p.dual_auth_enabled) for p in policies] == [(DUAL_AUTH_DELETE, False)]
    services.keys.delete(ctx, key.id)

    other = create(services, ctx)
    services.key_policies.set(ctx, other.id, KeyPolicyChanges(dual_auth_delete=True))
    services.keys.set_key_for_deletion(ctx, other.id)
    assert services.keys.delete(bob, other.id).state is KeyState.DESTROYED


def test_policies_given_at_creation_show_as_created_with_the_key(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx, dual_auth_delete=True, rotation=RotationPolicy(True, 4))
    clock.advance(days=1)
    _, policies = services.key_policies.get(ctx, key.id)
    assert [p.policy_type for p in policies] == [ROTATION, DUAL_AUTH_DELETE]
    for policy in policies:
        assert (policy.created_at, policy.created_by) == (key.created_at, key.created_by)
        assert policy.id == policy_id(ctx.tenant, key.id, policy.policy_type)
    assert create(services, ctx).id not in [p.key_id for p in policies]
    assert services.key_policies.get(ctx, create(services, ctx).id)[1] == []


def test_a_policy_write_losing_a_race_rereads_and_keeps_the_other_change(
    services: Services, ctx: CallContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = create(services, ctx)
    services.key_rings.create(ctx, "elsewhere")
    real_get = services.keys.get
    calls: list[str] = []

    def racing_get(c: CallContext, ref: str) -> Key:
        found = real_get(c, ref)
        if not calls:  # another replica moves the key between our read and our write
            rival = real_get(c, ref)
            rival.key_ring = "elsewhere"
            with services.store.transaction() as tx:
                tx.update_key(rival)
        calls.append(ref)
        return found

    monkeypatch.setattr(services.keys, "get", racing_get)
    services.key_policies.set(ctx, key.id, KeyPolicyChanges(dual_auth_delete=True))
    assert len(calls) == 2
    monkeypatch.undo()
    stored = services.keys.get(ctx, key.id)
    assert (stored.key_ring, stored.dual_auth.enabled) == ("elsewhere", True)


def test_key_policies_are_tenant_scoped(
    services: Services, ctx: CallContext, other_tenant: CallContext
) -> None:
    key = create(services, ctx)
    with raises(NotFound, Reason.KEY_NOT_FOUND):
        services.key_policies.set(other_tenant, key.id, KeyPolicyChanges(dual_auth_delete=True))
    with raises(NotFound, Reason.KEY_NOT_FOUND):
        services.key_policies.get(other_tenant, key.id)


# --- instance policies: validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "stored"),
    [
        (InstancePolicySetting(DUAL_AUTH_DELETE, True), {"enabled": True}),
        (InstancePolicySetting(METRICS, False, {}), {"enabled": False}),
        (
            InstancePolicySetting(ALLOWED_NETWORK, True, {"allowed_network": "private-only"}),
            {"enabled": True, "attributes": {"allowed_network": "private-only"}},
        ),
        (InstancePolicySetting(ALLOWED_NETWORK, False), {"enabled": False}),
        (
            InstancePolicySetting(ALLOWED_IP, True, {"allowed_ip": ["10.0.0.0/8", "2001:db8::/32"]}),
            {"enabled": True, "attributes": {"allowed_ip": ["10.0.0.0/8", "2001:db8::/32"]}},
        ),
        (InstancePolicySetting(ALLOWED_IP, False), {"enabled": False}),
        (
            InstancePolicySetting(KEY_CREATE_IMPORT_ACCESS, True, {"import_root_key": False}),
            {
                "enabled": True,
                "attributes": {
                    "create_root_key": True,
                    "create_standard_key": True,
                    "import_root_key": False,
                    "import_standard_key": True,
                    "enforce_token": False,
                },
            },
        ),
        (InstancePolicySetting(KEY_CREATE_IMPORT_ACCESS, False), {"enabled": False}),
        (
            InstancePolicySetting(ROTATION, True, {"interval_month": 3}),
            {"enabled": True, "attributes": {"interval_month": 3}},
        ),
        (
            InstancePolicySetting(ROTATION, False, {"interval_month": 3}),
            {"enabled": False, "attributes": {"interval_month": 3}},
        ),
    ],
)
def test_instance_policies_normalise(setting: InstancePolicySetting, stored: dict[str, object]) -> None:
    assert normalise_instance_policy(setting) == stored


@pytest.mark.parametrize(
    ("setting", "reason", "target"),
    [
        (InstancePolicySetting(DUAL_AUTH_DELETE, True, {"x": 1}), Reason.BAD_BODY, None),
        (InstancePolicySetting(ALLOWED_NETWORK, True), Reason.MISSING_FIELD, "allowed_network"),
        (
            InstancePolicySetting(ALLOWED_NETWORK, True, {"allowed_network": "public"}),
            Reason.INVALID_FIELD,
            "allowed_network",
        ),
        (InstancePolicySetting(ALLOWED_IP, True), Reason.MISSING_FIELD, "allowed_ip"),
        (InstancePolicySetting(ALLOWED_IP, True, {"allowed_ip": []}), Reason.INVALID_FIELD, "allowed_ip"),
        (
            InstancePolicySetting(ALLOWED_IP, True, {"allowed_ip": ["10.0.0.1"]}),
            Reason.INVALID_FIELD,
            "allowed_ip",
        ),
        (
            InstancePolicySetting(ALLOWED_IP, True, {"allowed_ip": ["10.0.0.0/33"]}),
            Reason.INVALID_FIELD,
            "allowed_ip",
        ),
        (
            InstancePolicySetting(ALLOWED_IP, True, {"allowed_ip": ["10.0.0.0/8"] * 1001}),
            Reason.INVALID_FIELD,
            "allowed_ip",
        ),
        (
            InstancePolicySetting(ALLOWED_IP, False, {"allowed_ip": ["10.0.0.0/8"]}),
            Reason.INVALID_FIELD,
            "allowed_ip",
        ),
        (
            InstancePolicySetting(KEY_CREATE_IMPORT_ACCESS, False, {"create_root_key": False}),
            Reason.INVALID_FIELD,
            "attributes",
        ),
        (
            InstancePolicySetting(KEY_CREATE_IMPORT_ACCESS, True, {"create_root_key": "no"}),
            Reason.INVALID_FIELD,
            "create_root_key",
        ),
        (InstancePolicySetting(ROTATION, True), Reason.MISSING_FIELD, "interval_month"),
        (
            InstancePolicySetting(ROTATION, True, {"interval_month": 13}),
            Reason.INVALID_FIELD,
            "interval_month",
        ),
        (InstancePolicySetting("ipWhitelist", True), Reason.INVALID_FIELD, "policy_type"),
    ],
)
def test_instance_policies_refuse(setting: InstancePolicySetting, reason: Reason, target: str | None) -> None:
    with raises(InvalidInput, reason, target):
        normalise_instance_policy(setting)


def test_instance_policies_store_all_or_nothing_and_keep_their_creation(
    services: Services, ctx: CallContext, bob: CallContext, clock: FixedClock, other_tenant: CallContext
) -> None:
    t0 = clock.now()
    instance(services, ctx, DUAL_AUTH_DELETE)
    clock.advance(hours=1)
    with raises(InvalidInput, Reason.INVALID_FIELD, "interval_month"):
        services.instance_policies.put(
            bob,
            [
                InstancePolicySetting(METRICS, True),
                InstancePolicySetting(ROTATION, True, {"interval_month": 0}),
            ],
        )
    with raises(InvalidInput, Reason.BAD_BODY):
        services.instance_policies.put(
            bob, [InstancePolicySetting(METRICS, True), InstancePolicySetting(METRICS, False)]
        )
    assert [p.policy_type for p in services.instance_policies.policies(ctx)] == [DUAL_AUTH_DELETE]

    listed = services.instance_policies.put(
        bob,
        [
            InstancePolicySetting(ROTATION, True, {"interval_month": 2}),
            InstancePolicySetting(DUAL_AUTH_DELETE, False),
        ],
    )
    assert [p.policy_type for p in listed] == [DUAL_AUTH_DELETE, ROTATION]
    dual = services.instance_policies.policies(ctx, DUAL_AUTH_DELETE)[0]
    assert (dual.data, dual.created_by, dual.created_at) == ({"enabled": False}, ctx.actor, t0)
    assert (dual.updated_by, dual.updated_at) == (bob.actor, clock.now())
    assert services.instance_policies.policies(ctx, METRICS) == []
    assert services.instance_policies.policies(other_tenant) == []


def test_the_allowed_ip_port_exists_only_while_an_allowed_ip_policy_is_enabled(
    services: Services, ctx: CallContext, other_tenant: CallContext
) -> None:
    assert services.instance_policies.allowed_ip_port(ctx) is None
    instance(services, ctx, ALLOWED_IP, allowed_ip=["192.168.0.0/16"])
    assert services.instance_policies.allowed_ip_port(ctx) == PRIVATE_ENDPOINT_PORT
    assert services.instance_policies.allowed_ip_port(other_tenant) is None
    instance(services, ctx, ALLOWED_IP, enabled=False)
    assert services.instance_policies.allowed_ip_port(ctx) is None


# --- instance policies: effects on new keys ---------------------------------------------------------


KINDS: dict[str, dict[str, Any]] = {
    "create_root_key": {},
    "create_standard_key": {"extractable": True},
    "import_root_key": {"payload": b"\x01" * 32},
    "import_standard_key": {"extractable": True, "payload": b"secret"},
}


@pytest.mark.parametrize("forbidden", sorted(KINDS))
def test_key_create_import_access_refuses_the_forbidden_kind_only(
    services: Services, ctx: CallContext, forbidden: str
) -> None:
    spec = KINDS[forbidden]
    before = create(services, ctx, **spec)
    instance(services, ctx, KEY_CREATE_IMPORT_ACCESS, **{forbidden: False})
    with raises(Conflict, Reason.KEY_CREATE_IMPORT_ACCESS):
        create(services, ctx, **spec)
    for kind, other in KINDS.items():
        if kind != forbidden:
            create(services, ctx, **other)
    assert services.keys.get(ctx, before.id).state is KeyState.ACTIVE  # existing keys untouched
    instance(services, ctx, KEY_CREATE_IMPORT_ACCESS, enabled=False)
    create(services, ctx, **spec)


def test_enforce_token_allows_only_secure_imports(services: Services, ctx: CallContext) -> None:
    instance(services, ctx, KEY_CREATE_IMPORT_ACCESS, enforce_token=True)
    with raises(Conflict, Reason.KEY_CREATE_IMPORT_ACCESS):
        create(services, ctx, payload=os.urandom(32))
    with raises(Conflict, Reason.KEY_CREATE_IMPORT_ACCESS):
        create(services, ctx, extractable=True, payload=b"standard keys cannot use a token")
    token = services.import_tokens.create(ctx, key_bits=2048)
    services.import_tokens.retrieve(ctx)
    client = encrypt_for_import(token)
    key = create(services, ctx, secure_import=client.request)
    assert key.imported
    create(services, ctx)  # generating keys is not importing

    with raises(Conflict, Reason.KEY_CREATE_IMPORT_ACCESS):
        services.instance_policies.require_secure_import(ctx, secure=False)
    services.instance_policies.require_secure_import(ctx, secure=True)
    services.instance_policies.require_secure_import(call_context(new_tenant()), secure=False)


def test_dual_auth_and_rotation_instance_policies_shape_later_keys_unless_overridden(
    services: Services, ctx: CallContext
) -> None:
    before = create(services, ctx)
    instance(services, ctx, DUAL_AUTH_DELETE)
    instance(services, ctx, ROTATION, interval_month=5)

    root = create(services, ctx)
    assert root.dual_auth.enabled is True
    assert root.rotation == RotationPolicy(True, 5)
    standard = create(services, ctx, extractable=True)
    assert (standard.dual_auth.enabled, standard.rotation) == (True, None)
    imported = create(services, ctx, payload=os.urandom(16))
    assert imported.rotation is None
    overridden = create(services, ctx, dual_auth_delete=False, rotation=RotationPolicy(True, 1))
    assert (overridden.dual_auth.enabled, overridden.rotation) == (False, RotationPolicy(True, 1))
    stored = services.keys.get(ctx, before.id)
    assert (stored.dual_auth.enabled, stored.rotation) == (False, None)

    instance(services, ctx, DUAL_AUTH_DELETE, enabled=False)
    instance(services, ctx, ROTATION, enabled=False, interval_month=5)
    later = create(services, ctx)
    assert (later.dual_auth.enabled, later.rotation) == (False, None)


def test_instance_policies_of_one_tenant_do_not_touch_another(
    services: Services, ctx: CallContext, other_tenant: CallContext
) -> None:
    instance(services, ctx, KEY_CREATE_IMPORT_ACCESS, create_root_key=False)
    instance(services, ctx, DUAL_AUTH_DELETE)
    key = create(services, other_tenant)
    assert key.dual_auth.enabled is False


# --- registrations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "crn",
    [
        "crn:v1:bluemix:public:cos:global:a/acct:inst:bucket:b:extra",  # 11 segments
        "crn:v1:bluemix:public:cos:global:a/acct",  # stops before the instance
        "crn:v1:bluemix:public:cos:global:a/acct::bucket:b",  # empty instance
        "urn:v1:bluemix:public:cos:global:a/acct:inst:bucket:b",
        "crn:v1:bluemix:public:cos:global:a/acct:inst:bucket:b*",
        "crn:v1:bluemix:public:cos:global:a/acct:inst:bucket:b c",
        "",
    ],
)
def test_registration_crns_are_validated(crn: str) -> None:
    with raises(InvalidInput, Reason.INVALID_FIELD, "urlEncodedResourceCRN"):
        validate_resource_crn(crn)


def test_crn_queries_match_by_segment_with_wildcards_after_the_instance() -> None:
    base = "crn:v1:bluemix:public:cos:global:a/acct:inst"
    assert CrnPattern.parse(base).matches(base + ":bucket:b1")
    assert CrnPattern.parse(base).literal_prefix == base
    assert not CrnPattern.parse(base).matches(base + "-2:bucket:b1")  # a segment, not a prefix
    star = CrnPattern.parse(base + ":bucket:my-*")
    assert star.literal_prefix == base + ":bucket:my-"
    assert star.matches(base + ":bucket:my-bucket")
    assert star.matches(base + ":bucket:my-")
    assert not star.matches(base + ":bucket:your-bucket")
    assert CrnPattern.parse(base + ":*:b1").matches(base + ":anything:b1")
    assert not CrnPattern.parse(base + ":bucket:b1").matches(base + ":bucket")
    for bad in ("crn:v1:bluemix:public:cos:global:a/acct:in*", "crn:v1:*", base + ":a:b:c"):
        with raises(InvalidInput, Reason.INVALID_FIELD, "urlEncodedResourceCRNQuery"):
            CrnPattern.parse(bad)


def test_creating_a_registration_is_idempotent_but_refuses_different_properties(
    services: Services, ctx: CallContext
) -> None:
    key = create(services, ctx)
    reg, created = services.registrations.create(ctx, key, CRN, description="bucket")
    assert created
    assert (reg.key_version_id, reg.created_by, reg.state) == (
        key.current_version_id,
        ctx.actor,
        RegistrationState.ACTIVE,
    )
    again, created = services.registrations.create(ctx, key, CRN, description="bucket")
    assert (again, created) == (reg, False)
    with raises(AlreadyExists, Reason.REGISTRATION_DUPLICATE):
        services.registrations.create(ctx, key, CRN, description="bucket", prevent_key_deletion=True)


def test_registrations_need_an_active_root_key(services: Services, ctx: CallContext) -> None:
    standard = create(services, ctx, extractable=True)
    with raises(InvalidInput, Reason.KEY_ROOT_REQUIRED):
        services.registrations.create(ctx, standard, CRN)
    suspended = create(services, ctx)
    services.keys.disable(ctx, suspended.id)
    with raises(Conflict, Reason.INVALID_STATE):
        services.registrations.create(ctx, services.keys.get(ctx, suspended.id), CRN)
    deleted = services.keys.delete(ctx, create(services, ctx).id)
    with raises(Conflict, Reason.INVALID_STATE):
        services.registrations.create(ctx, deleted, CRN)


def test_patch_merges_and_put_replaces(
    services: Services, ctx: CallContext, bob: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx)
    services.registrations.create(ctx, key, CRN, description="d", registration_metadata="m")
    clock.advance(minutes=1)
    merged = services.registrations.update(bob, key, CRN, RegistrationPatch(prevent_key_deletion=True))
    assert (merged.description, merged.registration_metadata, merged.prevent_key_deletion) == ("d", "m", True)
    assert (merged.updated_by, merged.updated_at, merged.created_by) == (bob.actor, clock.now(), ctx.actor)
    replaced = services.registrations.replace(ctx, key, CRN, description="new")
    assert (replaced.description, replaced.registration_metadata, replaced.prevent_key_deletion) == (
        "new",
        None,
        False,
    )
    with raises(NotFound, Reason.REGISTRATION_NOT_FOUND):
        services.registrations.update(ctx, key, CRN + "-other", RegistrationPatch(description="x"))
    with raises(NotFound, Reason.REGISTRATION_NOT_FOUND):
        services.registrations.replace(ctx, key, CRN + "-other")


def test_put_moves_the_key_version_forward_only(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx)
    first = key.current_version_id
    services.registrations.create(ctx, key, CRN)
    clock.advance(hours=2)
    rotated = services.keys.rotate(ctx, key.id)
    moved = services.registrations.replace(ctx, rotated, CRN, key_version_id=rotated.current_version_id)
    assert (moved.key_version_id, moved.key_version_created_at) == (rotated.current_version_id, clock.now())
    with raises(InvalidInput, Reason.KEY_VERSION_INVALID):
        services.registrations.replace(ctx, rotated, CRN, key_version_id=first)
    other = create(services, ctx)
    for bogus in (other.current_version_id, str(uuid.uuid4())):
        with raises(InvalidInput, Reason.KEY_VERSION_INVALID):
            services.registrations.replace(ctx, rotated, CRN, key_version_id=bogus)
    same = services.registrations.replace(ctx, rotated, CRN, key_version_id=rotated.current_version_id)
    assert same.key_version_id == rotated.current_version_id


def test_registrations_block_deletion_as_documented(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx)
    services.registrations.create(ctx, key, CRN)
    services.registrations.create(ctx, key, CRN + "-2")
    with raises(Conflict, Reason.PROTECTED_RESOURCE):
        services.keys.delete(ctx, key.id)
    assert services.keys.get(ctx, key.id).state is KeyState.ACTIVE

    services.registrations.update(ctx, key, CRN + "-2", RegistrationPatch(prevent_key_deletion=True))
    for force in (False, True):
        with raises(Conflict, Reason.PREVENT_KEY_DELETION):
            services.keys.delete(ctx, key.id, force=force)
    assert len(services.registrations.list_for_key(ctx, key)) == 2

    services.registrations.update(ctx, key, CRN + "-2", RegistrationPatch(prevent_key_deletion=False))
    deleted = services.keys.delete(ctx, key.id, force=True)
    assert deleted.state is KeyState.DESTROYED
    assert services.registrations.list_for_key(ctx, deleted) == []  # force removed them
    everything = services.store.list_registrations(ctx.tenant, RegistrationQuery(states=None))
    assert {r.state for r in everything} == {RegistrationState.SUSPENDED}

    clock.advance(minutes=1)
    restored = services.keys.restore(ctx, key.id)
    services.keys.delete(ctx, restored.id)  # suspended registrations no longer block


def test_a_key_without_registrations_deletes_without_force(services: Services, ctx: CallContext) -> None:
    key = create(services, ctx)
    other = create(services, ctx)
    services.registrations.create(ctx, other, CRN)
    assert services.keys.delete(ctx, key.id).state is KeyState.DESTROYED


def test_deactivate_moves_a_suspended_registration_on(services: Services, ctx: CallContext) -> None:
    key = create(services, ctx)
    services.registrations.create(ctx, key, CRN)
    with raises(Conflict, Reason.REGISTRATION_INVALID_STATE):
        services.registrations.deactivate(ctx, key, CRN)
    deleted = services.keys.delete(ctx, key.id, force=True)
    assert services.registrations.deactivate(ctx, deleted, CRN).state is RegistrationState.DEACTIVATED
    with raises(Conflict, Reason.REGISTRATION_INVALID_STATE):
        services.registrations.deactivate(ctx, deleted, CRN)
    with raises(NotFound, Reason.REGISTRATION_NOT_FOUND):
        services.registrations.deactivate(ctx, deleted, CRN + "-other")
    # the suspended/deactivated leftover neither lists nor deletes
    with raises(NotFound, Reason.REGISTRATION_NOT_FOUND):
        services.registrations.delete(ctx, deleted, CRN)


def test_a_restored_key_can_register_the_same_resource_again(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx)
    services.registrations.create(ctx, key, CRN, description="old")
    services.keys.delete(ctx, key.id, force=True)
    clock.advance(minutes=1)
    restored = services.keys.restore(ctx, key.id)
    reg, created = services.registrations.create(ctx, restored, CRN, description="new")
    assert created and reg.state is RegistrationState.ACTIVE and reg.description == "new"


def test_listing_registrations_by_pattern_ring_and_tenant(
    services: Services, ctx: CallContext, other_tenant: CallContext, clock: FixedClock
) -> None:
    services.key_rings.create(ctx, "ring-a")
    k1 = create(services, ctx)
    k2 = create(services, ctx, key_ring="ring-a")
    base = "crn:v1:bluemix:public:cos:global:a/acct:inst:bucket:"
    services.registrations.create(ctx, k1, base + "alpha", prevent_key_deletion=True)
    clock.advance(seconds=1)  # lists are oldest first
    services.registrations.create(ctx, k2, base + "beta")
    clock.advance(seconds=1)
    services.registrations.create(ctx, k2, base.replace("inst", "other") + "alpha")
    foreign = create(services, other_tenant)
    services.registrations.create(other_tenant, foreign, base + "alpha")

    def names(regs: list[Registration]) -> list[str]:
        return [f"{r.resource_crn.split(':')[7]}/{r.resource_crn.split(':')[9]}" for r in regs]

    assert names(services.registrations.list_all(ctx)) == ["inst/alpha", "inst/beta", "other/alpha"]
    assert names(services.registrations.list_all(ctx, key_ring="ring-a")) == ["inst/beta", "other/alpha"]
    assert names(services.registrations.list_all(ctx, pattern=CrnPattern.parse(base[:-8]))) == [
        "inst/alpha",
        "inst/beta",
    ]
    assert names(services.registrations.list_all(ctx, pattern=CrnPattern.parse(base + "b*"))) == ["inst/beta"]
    assert names(services.registrations.list_all(ctx, prevent_key_deletion=True)) == ["inst/alpha"]
    assert names(services.registrations.list_for_key(ctx, k2)) == ["inst/beta", "other/alpha"]
    assert names(services.registrations.list_all(other_tenant)) == ["inst/alpha"]


# --- key rings --------------------------------------------------------------------------------------


def test_key_rings_are_created_once_and_listed_default_first(
    services: Services, ctx: CallContext, clock: FixedClock, other_tenant: CallContext
) -> None:
    fresh = services.key_rings.list(ctx, limit=100)
    assert [(r.id, r.created_by) for r in fresh.rings] == [(DEFAULT_KEY_RING, None)]
    assert services.key_rings.create(ctx, "zeta") is True
    assert services.key_rings.create(ctx, "alpha-1") is True
    assert services.key_rings.create(ctx, "zeta") is False
    page = services.key_rings.list(ctx, limit=100)
    assert [r.id for r in page.rings] == [DEFAULT_KEY_RING, "alpha-1", "zeta"]
    assert (page.rings[2].created_by, page.rings[2].created_at) == (ctx.actor, clock.now())
    assert [r.id for r in services.key_rings.list(ctx, limit=1, offset=1).rings] == ["alpha-1"]
    assert services.key_rings.list(ctx, limit=1).total == 3
    assert [r.id for r in services.key_rings.list(other_tenant, limit=100).rings] == [DEFAULT_KEY_RING]
    assert services.key_rings.create(other_tenant, "zeta") is True


@pytest.mark.parametrize(
    "ring_id", ["a", "x" * 101, "has_underscore", "has space", "dötted", "default", "DEFAULT"]
)
def test_key_ring_ids_are_validated_and_default_is_reserved(
    services: Services, ctx: CallContext, ring_id: str
) -> None:
    with raises(InvalidInput, Reason.INVALID_FIELD, "id"):
        services.key_rings.create(ctx, ring_id)
    with raises(InvalidInput, Reason.INVALID_FIELD, "id"):
        services.key_rings.delete(ctx, ring_id)


def test_an_instance_holds_at_most_50_key_rings_default_included(
    services: Services, ctx: CallContext, other_tenant: CallContext
) -> None:
    for n in range(MAX_KEY_RINGS - 1):
        assert services.key_rings.create(ctx, f"ring-{n:02d}")
    with raises(Conflict, Reason.KEY_RING_QUOTA):
        services.key_rings.create(ctx, "one-too-many")
    assert services.key_rings.create(ctx, "ring-00") is False  # existing ones still answer
    assert services.key_rings.create(other_tenant, "one-too-many")
    services.key_rings.delete(ctx, "ring-00")
    assert services.key_rings.create(ctx, "one-too-many")


def test_deleting_key_rings(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    with raises(NotFound, Reason.KEY_RING_NOT_FOUND):
        services.key_rings.delete(ctx, "nope")
    services.key_rings.create(ctx, "empty")
    services.key_rings.delete(ctx, "empty")
    assert [r.id for r in services.key_rings.list(ctx, limit=10).rings] == [DEFAULT_KEY_RING]

    services.key_rings.create(ctx, "busy")
    live = create(services, ctx, key_ring="busy")
    gone = services.keys.delete(ctx, create(services, ctx, key_ring="busy").id)
    with raises(Conflict, Reason.KEY_RING_NOT_EMPTY):
        services.key_rings.delete(ctx, "busy")
    with raises(Conflict, Reason.KEY_RING_KEYS_NOT_DELETED):
        services.key_rings.delete(ctx, "busy", force=True)

    services.keys.delete(ctx, live.id)
    with raises(Conflict, Reason.KEY_RING_NOT_EMPTY):  # deleted keys still count without force
        services.key_rings.delete(ctx, "busy")
    clock.advance(minutes=1)
    services.key_rings.delete(ctx, "busy", force=True)
    assert [r.id for r in services.key_rings.list(ctx, limit=10).rings] == [DEFAULT_KEY_RING]
    for key_id in (live.id, gone.id):
        moved = services.keys.get(ctx, key_id)
        assert (moved.key_ring, moved.state, moved.updated_at) == (
            DEFAULT_KEY_RING,
            KeyState.DESTROYED,
            clock.now(),
        )
    restored = services.keys.restore(ctx, live.id)
    assert (restored.key_ring, restored.state) == (DEFAULT_KEY_RING, KeyState.ACTIVE)
    assert services.keys.count(ctx, KeyQuery(key_ring="busy")) == 0


def test_a_key_ring_of_another_tenant_is_invisible(
    services: Services, ctx: CallContext, other_tenant: CallContext
) -> None:
    services.key_rings.create(ctx, "mine")
    with raises(NotFound, Reason.KEY_RING_NOT_FOUND):
        services.key_rings.delete(other_tenant, "mine")
    with raises(NotFound, Reason.KEY_RING_NOT_FOUND):
        create(services, other_tenant, key_ring="mine")
    assert create(services, ctx, key_ring="mine").key_ring == "mine"
