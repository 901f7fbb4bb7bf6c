"""The Huawei API daemon shared by the test modules that need no special configuration; a module
loads it with ``pytest_plugins = ("huawei_fixtures",)``. One daemon for the session instead of
one per module: each start costs a SoftHSM2 login, a migration and two listeners."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from daemon import Daemon
from huawei_support import start_daemon, stop_daemon


@pytest.fixture(scope="session")
def daemon(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    d = start_daemon(softhsm_token, tmp_path_factory.mktemp("huawei"))
    yield d
    stop_daemon(d)
