"""Huawei Cloud KMS API v1.0 (``/v1.0/{project_id}/kms/...``) as a thin adapter over the core.

One module per resource (keys, import_material, datakeys, data, random), the AK/SK and X-Auth-Token
authenticator (auth.py), the error body and code table (errors.py). Mounted on the same FastAPI app
and REST listener as the Key Protect facade (rest/app.py), through the same security gate; a project
is the tenant ``huawei:{project_id}``. What is and is not implemented: docs/huawei.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hsmbridge.core.services import Services
    from hsmbridge.huawei.auth import HuaweiAuthenticator
    from hsmbridge.security.gate import SecurityGate

PATH_PREFIX = "/v1.0/"


def install(app: Any, services: Services, authenticator: HuaweiAuthenticator, gate: SecurityGate) -> None:
    """Add the Huawei routes to `app` (a FastAPI application)."""
    from hsmbridge.huawei import data, datakeys, import_material, keys, random
    from hsmbridge.huawei.context import HuaweiState

    app.state.huawei = HuaweiState(services, authenticator, gate)
    for module in (keys, import_material, datakeys, data, random):
        app.include_router(module.router)


def is_huawei_path(path: str) -> bool:
    return path.startswith(PATH_PREFIX)
