"""Per-cloud clients behind `base.CloudClient`; `client_for` builds one for a connection.

The SDK of each cloud is imported only when a connection to it is used, so a daemon without the
``push`` extra (boto3, huaweicloudsdkkms) still serves everything else, and says what to install.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hsmbridge.errors import Unsupported
from hsmbridge.push.clouds.base import CloudClient


def client_for(cloud: str, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> CloudClient:
    try:
        if cloud == "ibm":
            from hsmbridge.push.clouds.ibm import KeyProtectClient

            return KeyProtectClient(settings, secrets)
        if cloud == "aws":
            from hsmbridge.push.clouds.aws import AwsKmsClient

            return AwsKmsClient(settings, secrets)
        if cloud == "huawei":
            from hsmbridge.push.clouds.huawei import HuaweiKmsClient

            return HuaweiKmsClient(settings, secrets)
    except ModuleNotFoundError as exc:
        raise Unsupported(
            f"pushing to {cloud} needs the {exc.name} package: pip install 'hsmbridge[push]'"
        ) from None
    raise Unsupported(f"no client for cloud {cloud!r}")
