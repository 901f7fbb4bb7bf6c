"""`hsmbridge dev` and the Huawei API: the banner prints a dev AK/SK pair (random unless
HSMBRIDGE_DEV_HUAWEI_AK / _SK fix it) and export lines, and the README's "Huawei Cloud KMS API"
example runs unchanged against it with only those lines pasted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from daemon import Daemon

from hsmbridge.huawei.auth import DEV_AK_ENV, DEV_SK_ENV, dev_access_key

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Huawei Cloud KMS API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]  # type: ignore[index]


def test_the_dev_pair_comes_from_the_environment_or_is_random() -> None:
    fixed = dev_access_key({DEV_AK_ENV: "MYDEVAK000001", DEV_SK_ENV: "my-dev-sk"})
    assert (fixed.access_key, fixed.secret_key, fixed.generated) == ("MYDEVAK000001", "my-dev-sk", False)
    one, two = dev_access_key({}), dev_access_key({})
    assert one.generated and one.access_key != two.access_key and one.secret_key != two.secret_key


@pytest.mark.softhsm
def test_the_readme_example_runs_against_the_dev_server(tmp_path: Path) -> None:
    d = Daemon(None, tmp_path, args=("dev",))
    try:
        d.start()
        d.wait_for("export HUAWEI_KMS_ENDPOINT=")
        output = "".join(d.output)
        exports = dict(re.findall(r"export (HUAWEI\w+)=(\S+)", output))
        assert exports["HUAWEI_KMS_ENDPOINT"] == d.rest_url
        assert (
            f"Huawei AK / SK:   {exports['HUAWEICLOUD_SDK_AK']} / {exports['HUAWEICLOUD_SDK_SK']}" in output
        )
        assert DEV_AK_ENV in output  # how to fix the random pair
        run = subprocess.run(
            [sys.executable, "-c", readme_example()],
            env={**os.environ, **exports},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "imported; data key round-trips" in run.stdout
    finally:
        if d.proc and d.proc.poll() is None:
            assert d.stop() == 0
