"""`hsmbridge init`, `hsm-info` and the start-up errors a newcomer meets, run as real commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.softhsm


def hsmbridge(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HSMBRIDGE_") and k != "SOFTHSM2_CONF"}
    return subprocess.run(
        [sys.executable, "-m", "hsmbridge.cli", *args],
        cwd=workdir,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_init_creates_a_dev_token_and_kek_once_then_hsm_info_reports_it(tmp_path: Path) -> None:
    first = hsmbridge(tmp_path, "init", "--softhsm")
    assert first.returncode == 0, first.stderr
    assert "created SoftHSM2 token" in first.stdout
    pin = tmp_path / "var" / "softhsm" / "pin"
    assert pin.stat().st_mode & 0o777 == 0o600
    again = hsmbridge(tmp_path, "init", "--softhsm")
    assert again.returncode == 0 and "already exists" in again.stdout
    info = hsmbridge(tmp_path, "hsm-info", "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["token_label"] == "hsmbridge" and data["capabilities"]["aes_gcm"] is True
    assert pin.read_text() not in first.stdout + first.stderr + info.stdout + info.stderr


def test_serve_without_a_master_kek_says_to_run_init(tmp_path: Path, softhsm_token: dict[str, str]) -> None:
    from hsmbridge import softhsm

    directory = tmp_path / "softhsm"
    conf = softhsm.write_config(directory)
    softhsm.init_token(conf, "empty", "1234")
    (directory / "pin").write_text("1234")
    result = hsmbridge(
        tmp_path,
        "serve",
        SOFTHSM2_CONF=str(conf),
        HSMBRIDGE_HSM__TOKEN_LABEL="empty",
        HSMBRIDGE_HSM__PIN_FILE=str(directory / "pin"),
        HSMBRIDGE_GRPC__LISTEN="127.0.0.1:0",
    )
    assert result.returncode == 2
    assert "hsmbridge init" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HSMBRIDGE_HSM__MODULE": "/nonexistent/libpkcs11.so"}, "does not exist"),
        ({"HSMBRIDGE_HSM__TOKEN_LABEL": "no-such-token"}, "no PKCS#11 token labelled"),
        ({"HSMBRIDGE_HSM__PIN_FILE": "/nonexistent/pin"}, "PIN file"),
        ({"HSMBRIDGE_HSM_PIN": "wrong-pin"}, "PIN was refused"),
        ({"HSMBRIDGE_HSM__POOL_SIZE": "zero"}, "invalid configuration"),
    ],
)
def test_start_up_errors_say_what_to_do(
    tmp_path: Path, softhsm_token: dict[str, str], env: dict[str, str], expected: str
) -> None:
    base = {
        "SOFTHSM2_CONF": softhsm_token["conf"],
        "HSMBRIDGE_HSM__TOKEN_LABEL": softhsm_token["label"],
        "HSMBRIDGE_HSM__PIN_FILE": softhsm_token["pin_file"],
    }
    result = hsmbridge(tmp_path, "hsm-info", **{**base, **env})
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert softhsm_token["pin"] not in result.stdout + result.stderr
