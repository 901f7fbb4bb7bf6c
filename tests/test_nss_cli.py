"""An operator's path to hsmbridge on NSS's softoken: a new database, `hsmbridge init`,
`hsmbridge hsm-info`, all through the CLI with a configuration file (docs/operating.md, "NSS
softoken"). Every step is its own process, as it would be on a host, so this runs in the main
(SoftHSM2) pass too: the test process never loads the softoken with this database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hsmbridge.hsm import nss

LABEL = "hsmbridge-cli"
PIN = "nss-cli-pin-1234"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.fixture
def nss_config(tmp_path: Path) -> Path:
    module = nss.find_module()
    assert module is not None, "libnss3 is not installed; `make test` installs it"
    database = tmp_path / "nssdb"
    database.mkdir()
    args = nss.init_args(database, LABEL)
    created = run(
        "-c",
        "import sys; from hsmbridge.hsm import nss; nss.init_token(*sys.argv[1:])",
        module,
        args,
        LABEL,
        PIN,
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN)
    pin_file.chmod(0o600)
    config = tmp_path / "hsmbridge.toml"
    init_args = args.replace("\\", "\\\\").replace('"', '\\"')
    config.write_text(
        "[hsm]\n"
        f'module = "{module}"\n'
        f'init_args = "{init_args}"\n'
        f'token_label = "{LABEL}"\n'
        f'pin_file = "{pin_file}"\n'
        'softhsm_dir = ""\n'
        "oaep_sha256_fallback = false\n"
        "export_software_fallback = false\n"
        "[store]\n"
        f'url = "{tmp_path / "hsmbridge.db"}"\n'
    )
    return config


def test_init_creates_the_kek_and_hsm_info_shows_the_measured_row(nss_config: Path) -> None:
    cwd = nss_config.parent
    env = {"SOFTHSM2_CONF": "/nonexistent"}  # nothing of SoftHSM2 is needed or used
    info = run("-m", "hsmbridge.cli", "--config", str(nss_config), "hsm-info", "--json", cwd=cwd, env=env)
    assert info.returncode == 2 and "master KEK" in info.stderr and "Traceback" not in info.stderr
    init = run("-m", "hsmbridge.cli", "--config", str(nss_config), "init", cwd=cwd, env=env)
    assert init.returncode == 0, init.stderr
    info = run("-m", "hsmbridge.cli", "--config", str(nss_config), "hsm-info", "--json", cwd=cwd, env=env)
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    from test_hsm_capabilities import MEASURED

    measured = {**MEASURED["nss"], "oaep_sha256_fallback": False}  # this configuration's choice
    assert shown["capabilities"] == measured
    assert shown["manufacturer"] == "Mozilla Foundation" and shown["token_label"] == LABEL
    again = run("-m", "hsmbridge.cli", "--config", str(nss_config), "init", cwd=cwd, env=env)
    assert again.returncode == 0, again.stderr  # idempotent: the KEK is found, not made twice


def test_one_module_with_two_initialisation_strings_is_refused(tmp_path: Path) -> None:
    """A module is initialised once per process: a group whose members name one module with two
    different `init_args` cannot be honoured, and says so instead of serving the wrong database."""
    module = nss.find_module()
    assert module is not None
    script = (
        "import sys\n"
        "from hsmbridge.errors import InvalidInput\n"
        "from hsmbridge.hsm.library import Pkcs11Library\n"
        "module, a, b = sys.argv[1:]\n"
        "Pkcs11Library.load(module, a)\n"
        "try:\n"
        "    Pkcs11Library.load(module, b)\n"
        "except InvalidInput as exc:\n"
        "    print(exc)\n"
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    result = run(
        "-c",
        script,
        module,
        nss.init_args(tmp_path / "a", "a"),
        nss.init_args(tmp_path / "b", "b"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "two different `init_args`" in result.stdout


@pytest.mark.parametrize("label", ["x" * 33, "it's"])
def test_init_args_refuses_what_the_softoken_cannot_parse(tmp_path: Path, label: str) -> None:
    with pytest.raises(ValueError, match="32 characters"):
        nss.init_args(tmp_path, label)


def test_without_init_args_the_error_names_the_setting(tmp_path: Path) -> None:
    """NSS refuses `C_Initialize` without its configuration: one line saying where it goes."""
    config = tmp_path / "hsmbridge.toml"
    config.write_text(
        f'[hsm]\nmodule = "{nss.find_module()}"\ntoken_label = "{LABEL}"\npin_file = ""\nsofthsm_dir = ""\n'
    )
    result = run(
        "-m",
        "hsmbridge.cli",
        "--config",
        str(config),
        "hsm-info",
        cwd=tmp_path,
        env={"HSMBRIDGE_HSM_PIN": PIN},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "check `hsm.init_args`" in result.stderr
