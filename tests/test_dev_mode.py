"""`hsmbridge dev`, run as a real command in a fresh directory: it creates its SoftHSM2 token and
master KEK, serves gRPC and REST on loopback, prints the credentials and export lines, accepts the
extra dev tokens, refuses non-loopback binds, and stops cleanly on SIGTERM. Plus the REST side of
`hsmbridge serve` (the line the test helper parses, `rest.enabled = false`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from daemon import DEV_TOKEN, Daemon
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hsmbridge.config import DEV_PRINCIPAL, dev_credentials
from hsmbridge.errors import InvalidInput

pytestmark = pytest.mark.softhsm

KEY_TYPE = "application/vnd.ibm.kms.key+json"


def create_key(url: str, token: str, instance: str, **fields: object) -> httpx.Response:
    body = {
        "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
        "resources": [{"type": KEY_TYPE, "name": "dev-key", **fields}],
    }
    return httpx.post(
        f"{url}/api/v2/keys",
        json=body,
        headers={"authorization": f"Bearer {token}", "bluemix-instance": instance},
        timeout=30,
    )


def run_cli(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
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


def test_dev_server_end_to_end(tmp_path: Path) -> None:
    first = Daemon(
        None,
        tmp_path,
        args=("dev",),
        HSMBRIDGE_DEV_TOKEN="fixed-dev-token",
        HSMBRIDGE_DEV_INSTANCE="dev-instance",
        HSMBRIDGE_DEV_EXTRA_TOKENS="bob-token=IBMid-bob, carol-token=IBMid-carol",
    )
    try:
        first.start()
        assert first.rest_url.startswith("http://127.0.0.1:")
        first.wait_for("export HSMBRIDGE_GRPC_ADDRESS=")
        output = "".join(first.output)
        assert "created SoftHSM2 token 'hsmbridge'" in output
        for line in (
            f"export KP_URL={first.rest_url}",
            "export KP_TOKEN=fixed-dev-token",
            "export KP_INSTANCE=dev-instance",
            f"export IBM_KEY_PROTECT_API_URL={first.rest_url}",
            "export IBM_KEY_PROTECT_API_AUTH_TYPE=bearerToken",
            "export IBM_KEY_PROTECT_API_BEARER_TOKEN=fixed-dev-token",
            f"export HSMBRIDGE_GRPC_ADDRESS={first.address}",
        ):
            assert line in output
        assert "bob-token   (principal IBMid-bob)" in output
        assert "store:            SQLite var/hsmbridge.db" in output
        assert f"metrics:          {first.metrics_url}" in output
        assert "audit log:        var/audit.log" in output
        pin = tmp_path / "var" / "softhsm" / "pin"
        assert pin.stat().st_mode & 0o777 == 0o600
        assert pin.read_text().strip() not in output

        # REST with the dev token and an extra principal: dual authorisation needs both.
        url = first.rest_url
        overrides = {
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [{"type": KEY_TYPE, "name": "dual", "dualAuthDelete": {"enabled": True}}],
        }
        dev = {"authorization": "Bearer fixed-dev-token", "bluemix-instance": "dev-instance"}
        bob = {"authorization": "Bearer bob-token", "bluemix-instance": "dev-instance"}
        key = httpx.post(f"{url}/api/v2/keys_with_policy_overrides", json=overrides, headers=dev, timeout=30)
        assert key.status_code == 201
        assert key.json()["resources"][0]["createdBy"] == DEV_PRINCIPAL
        key_id = key.json()["resources"][0]["id"]
        assert (
            httpx.post(f"{url}/api/v2/keys/{key_id}/actions/setKeyForDeletion", headers=dev).status_code
            == 204
        )
        assert httpx.delete(f"{url}/api/v2/keys/{key_id}", headers=bob).status_code == 204
        unknown = httpx.get(f"{url}/api/v2/keys", headers={**dev, "authorization": "Bearer nope"})
        assert unknown.status_code == 401
        assert httpx.get(f"{url}/docs").status_code == 200
        kept = create_key(url, "fixed-dev-token", "dev-instance", aliases=["survives-restart"])
        assert kept.status_code == 201
        # audit events go to var/audit.log, not to the terminal
        audit = (tmp_path / "var" / "audit.log").read_text()
        assert '"event":"kms.secrets.create"' in audit
        assert '"event":' not in "".join(first.output)

        # gRPC on the same process
        with grpc.insecure_channel(first.address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert first.stop() == 0
    assert "stopped" in "".join(first.output)

    # A second start reuses ./var: same token on disk, a new random dev token and instance.
    second = Daemon(None, tmp_path, args=("dev",), HSMBRIDGE_DEV_TOKEN="")
    try:
        second.start()
        second.wait_for("export HSMBRIDGE_GRPC_ADDRESS=")
        output = "".join(second.output)
        assert "already exists" in output
        assert "set HSMBRIDGE_DEV_TOKEN to fix it" in output
        token = second.wait_for("export KP_TOKEN=").split("=", 1)[1].strip()
        instance = second.wait_for("export KP_INSTANCE=").split("=", 1)[1].strip()
        assert token != "fixed-dev-token"
        assert instance != "dev-instance"
        old = httpx.get(
            f"{second.rest_url}/api/v2/keys/survives-restart",
            headers={"authorization": f"Bearer {token}", "bluemix-instance": "dev-instance"},
        )
        assert old.status_code == 200
        assert create_key(second.rest_url, token, instance).status_code == 201
        assert create_key(second.rest_url, "fixed-dev-token", instance).status_code == 401
    finally:
        assert second.stop() == 0


def test_dev_audit_stdout_prints_the_events(tmp_path: Path) -> None:
    dev = Daemon(None, tmp_path, args=("dev", "--audit-stdout"), HSMBRIDGE_DEV_INSTANCE="i")
    try:
        dev.start()
        dev.wait_for("audit log:        stdout")
        assert create_key(dev.rest_url, DEV_TOKEN, "i").status_code == 201
        dev.wait_for('"event":"kms.secrets.create"')
        assert not (tmp_path / "var" / "audit.log").exists()
    finally:
        assert dev.stop() == 0


@pytest.mark.parametrize(
    ("flag", "what"), [("--metrics-listen", "metrics"), ("--rest-listen", "REST"), ("--grpc-listen", "gRPC")]
)
def test_dev_names_the_busy_port_and_the_flag(tmp_path: Path, flag: str, what: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        others = {
            "--grpc-listen": "127.0.0.1:0",
            "--rest-listen": "127.0.0.1:0",
            "--metrics-listen": "127.0.0.1:0",
        }
        args = [arg for name, value in {**others, flag: f"127.0.0.1:{port}"}.items() for arg in (name, value)]
        result = run_cli(tmp_path, "dev", *args)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} for {what}" in result.stderr
    assert f"pick another with {flag} HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()  # refused before creating anything


def test_dev_help_lists_every_listener() -> None:
    result = run_cli(Path.cwd(), "dev", "--help")
    for flag in ("--grpc-listen", "--rest-listen", "--metrics-listen", "--audit-stdout"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    "args",
    [("--rest-listen", "0.0.0.0:0"), ("--grpc-listen", "0.0.0.0:0"), ("--rest-listen", "192.0.2.10:8080")],
)
def test_dev_refuses_non_loopback_binds(tmp_path: Path, args: tuple[str, str]) -> None:
    result = run_cli(tmp_path, "dev", *args)
    assert result.returncode == 2
    assert "loopback" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()  # refused before creating anything


def test_dev_refuses_malformed_extra_tokens(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "dev", HSMBRIDGE_DEV_EXTRA_TOKENS="no-principal")
    assert result.returncode == 2
    assert "HSMBRIDGE_DEV_EXTRA_TOKENS" in result.stderr


def test_dev_credentials_from_the_environment() -> None:
    fixed = dev_credentials(
        {
            "HSMBRIDGE_DEV_TOKEN": "tok",
            "HSMBRIDGE_DEV_INSTANCE": "inst",
            "HSMBRIDGE_DEV_EXTRA_TOKENS": "a=IBMid-a,b=IBMid-b,",
        }
    )
    assert fixed.token == "tok"
    assert fixed.instance == "inst"
    assert not fixed.token_generated
    assert fixed.tokens() == {"tok": DEV_PRINCIPAL, "a": "IBMid-a", "b": "IBMid-b"}
    random_one, random_two = dev_credentials({}), dev_credentials({})
    assert random_one.token_generated
    assert random_one.token != random_two.token
    assert random_one.instance != random_two.instance
    for bad in ("x", "=p", "t=", "tok=p", "a=p,a=q"):
        with pytest.raises(InvalidInput):
            dev_credentials({"HSMBRIDGE_DEV_TOKEN": "tok", "HSMBRIDGE_DEV_EXTRA_TOKENS": bad})


def test_serve_prints_the_rest_line_and_can_disable_rest(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path: Path
) -> None:
    served = Daemon(softhsm_token, tmp_path / "with-rest")
    (tmp_path / "with-rest").mkdir()
    try:
        served.start()
        assert served.rest_url
        response = create_key(served.rest_url, DEV_TOKEN, "serve-instance")
        assert response.status_code == 201
    finally:
        assert served.stop() == 0
    (tmp_path / "without").mkdir()
    no_rest = Daemon(softhsm_token, tmp_path / "without", HSMBRIDGE_REST__ENABLED="false")
    try:
        no_rest.start()
        assert no_rest.rest_url == ""
    finally:
        assert no_rest.stop() == 0


def test_serve_refuses_a_non_loopback_rest_bind(softhsm_token: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(
        tmp_path,
        "serve",
        SOFTHSM2_CONF=softhsm_token["conf"],
        HSMBRIDGE_HSM__TOKEN_LABEL=softhsm_token["label"],
        HSMBRIDGE_HSM__PIN_FILE=softhsm_token["pin_file"],
        HSMBRIDGE_GRPC__LISTEN="127.0.0.1:0",
        HSMBRIDGE_REST__LISTEN="0.0.0.0:0",
    )
    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_serve_reports_a_busy_rest_port(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_cli(
            tmp_path,
            "serve",
            SOFTHSM2_CONF=softhsm_token["conf"],
            HSMBRIDGE_HSM__TOKEN_LABEL=softhsm_token["label"],
            HSMBRIDGE_HSM__PIN_FILE=softhsm_token["pin_file"],
            HSMBRIDGE_GRPC__LISTEN="127.0.0.1:0",
            HSMBRIDGE_REST__LISTEN=f"127.0.0.1:{port}",
            HSMBRIDGE_DEV_TOKEN="t",
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} for REST" in result.stderr
    assert "Traceback" not in result.stderr
