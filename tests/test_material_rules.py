"""`keyCreateImportAccess.enforce_token` also governs material supplied to existing keys: a
rotation (or restore) with a plain payload is refused, through every transport, while material
sent through an import token is accepted."""

from __future__ import annotations

import os

import pytest
from services import build_services, call_context, close_services, encrypt_for_import, new_tenant

from hsmbridge.core.keys import KeySpec
from hsmbridge.core.policies import InstancePolicySetting
from hsmbridge.errors import Conflict, Reason

pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]


def test_enforce_token_refuses_plain_material_on_rotate(hsm_backend) -> None:  # type: ignore[no-untyped-def]
    services = build_services(hsm_backend)
    try:
        ctx = call_context(new_tenant())
        key = services.keys.create(ctx, KeySpec(name="imported", payload=os.urandom(32)))
        services.instance_policies.put(
            ctx,
            [
                InstancePolicySetting(
                    "keyCreateImportAccess",
                    True,
                    {
                        "create_root_key": True,
                        "create_standard_key": True,
                        "import_root_key": True,
                        "import_standard_key": True,
                        "enforce_token": True,
                    },
                )
            ],
        )
        with pytest.raises(Conflict) as refused:
            services.keys.rotate(ctx, key.id, payload=os.urandom(32))
        assert refused.value.reason is Reason.KEY_CREATE_IMPORT_ACCESS
        services.import_tokens.create(ctx, key_bits=2048)
        token = services.import_tokens.retrieve(ctx)
        rotated = services.keys.rotate(ctx, key.id, secure_import=encrypt_for_import(token).request)
        assert rotated.current_version_id != key.current_version_id
    finally:
        close_services(services)
