"""A non-development server: no call without valid credentials, roles enforced, gRPC on a unix
socket only its owner can open, an audit file, and refusals at start-up for unsafe set-ups."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from daemon import Daemon

from hsmbridge.security.tokens import generate_token
from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc, keys_pb2, keys_pb2_grpc

pytestmark = pytest.mark.softhsm
INSTANCE = "prod-instance"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prod(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Daemon, dict[str, str], Path]]:
    workdir = tmp_path_factory.mktemp("prod")
    writer, writer_hash = generate_token()
    reader, reader_hash = generate_token()
    audit = workdir / "audit.jsonl"
    config = workdir / "hsmbridge.toml"
    config.write_text(f"""
[server]
dev = false

[grpc]
listen = "unix:{workdir}/run/grpc.sock"
socket_mode = 0o600

[[security.tokens]]
token_sha256 = "{writer_hash}"
principal = "svc-writer"
instances = ["{INSTANCE}"]
roles = ["Writer"]

[[security.tokens]]
token_sha256 = "{reader_hash}"
principal = "svc-reader"
instances = ["{INSTANCE}"]
roles = ["Reader"]

[security.audit]
sink = "file"
path = "{audit}"
""")
    d = Daemon(
        softhsm_token,
        workdir,
        HSMBRIDGE_CONFIG=str(config),
        HSMBRIDGE_GRPC__LISTEN=f"unix:{workdir}/run/grpc.sock",
        HSMBRIDGE_GRPC__HEALTH_LISTEN=f"127.0.0.1:{_free_port()}",
    )
    d.start()
    yield d, {"writer": writer, "reader": reader}, audit
    d.stop()


def test_health_probes_answer_on_the_socket_and_the_health_listener(
    prod: tuple[Daemon, dict[str, str], Path],
) -> None:
    """`hsmbridge health` is what the Kubernetes exec probes run; the plaintext health listener
    serves `grpc:` probes that cannot do mTLS. Neither needs credentials, neither serves data."""
    import subprocess
    import sys

    daemon, _, _ = prod

    def probe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hsmbridge.cli", "health", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    socket_path = daemon.address.removeprefix("unix:")
    ready = probe("--socket", socket_path)
    assert ready.returncode == 0 and ready.stdout.strip() == "SERVING"
    assert probe("--socket", socket_path, "--service", "liveness", "--live").returncode == 0
    assert probe("--address", daemon.env["HSMBRIDGE_GRPC__HEALTH_LISTEN"]).returncode == 0
    assert probe("--socket", socket_path + ".missing", "--timeout", "1").returncode == 2
    channel = grpc.insecure_channel(daemon.env["HSMBRIDGE_GRPC__HEALTH_LISTEN"])
    with pytest.raises(grpc.RpcError) as err:  # the health listener serves nothing else
        keys_pb2_grpc.KeyServiceStub(channel).GetKey(keys_pb2.GetKeyRequest(key_id="x"), timeout=5)
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_grpc_listens_on_a_unix_socket_only_its_owner_can_open(
    prod: tuple[Daemon, dict[str, str], Path],
) -> None:
    daemon, _, _ = prod
    path = Path(daemon.address.removeprefix("unix:"))
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_call_without_valid_credentials_and_roles_are_enforced(
    prod: tuple[Daemon, dict[str, str], Path],
) -> None:
    daemon, tokens, audit = prod
    channel = grpc.insecure_channel(daemon.address)
    keys = keys_pb2_grpc.KeyServiceStub(channel)
    crypto = crypto_pb2_grpc.CryptoServiceStub(channel)
    tenant = ("x-hsmbridge-tenant", INSTANCE)
    for metadata in (
        (tenant,),
        (tenant, ("authorization", "Bearer nope")),
        (tenant, ("x-hsmbridge-principal", "admin")),
    ):  # dev-mode metadata means nothing here
        with pytest.raises(grpc.RpcError) as err:
            keys.CreateKey(keys_pb2.CreateKeyRequest(name="k"), metadata=metadata)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    reader = (tenant, ("authorization", f"Bearer {tokens['reader']}"))
    with pytest.raises(grpc.RpcError) as err:
        keys.CreateKey(keys_pb2.CreateKeyRequest(name="k"), metadata=reader)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    writer = (tenant, ("authorization", f"Bearer {tokens['writer']}"))
    key = keys.CreateKey(keys_pb2.CreateKeyRequest(name="prod-key"), metadata=writer)
    wrapped = crypto.Wrap(crypto_pb2.WrapRequest(key_id=key.id), metadata=writer)
    assert (
        crypto.Unwrap(
            crypto_pb2.UnwrapRequest(key_id=key.id, ciphertext=wrapped.ciphertext), metadata=reader
        ).plaintext
        == wrapped.plaintext
    )
    with pytest.raises(grpc.RpcError) as err:  # the writer may not use another instance
        keys.GetKey(
            keys_pb2.GetKeyRequest(key_id=key.id),
            metadata=(("x-hsmbridge-tenant", "other"), ("authorization", f"Bearer {tokens['writer']}")),
        )
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED

    rest = httpx.Client(base_url=daemon.rest_url)
    assert rest.get("/api/v2/keys", headers={"bluemix-instance": INSTANCE}).status_code == 401
    listed = rest.get(
        "/api/v2/keys", headers={"bluemix-instance": INSTANCE, "authorization": f"Bearer {tokens['reader']}"}
    )
    assert listed.status_code == 200 and [k["id"] for k in listed.json()["resources"]] == [key.id]

    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {"kms.secrets.create", "kms.secrets.wrap", "kms.secrets.unwrap", "kms.secrets.list"} <= {
        e["event"] for e in events
    }
    assert any(e["outcome"] == "failure" and e["reason"] == "UNAUTHENTICATED" for e in events)
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    text = audit.read_text()
    assert tokens["writer"] not in text and tokens["reader"] not in text


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[server]\ndev = false\n", "no way to authenticate callers"),
        (
            '[server]\ndev = false\n[[security.tokens]]\ntoken_sha256 = "' + "0" * 64 + '"\nprincipal = "p"\n'
            'instances = "*"\nroles = ["Reader"]\n[grpc]\nlisten = "0.0.0.0:0"\n',
            "plaintext",
        ),
        ('[server]\ndev = true\n[grpc]\nlisten = "0.0.0.0:0"\n', "refuses to listen"),
    ],
)
def test_unsafe_set_ups_are_refused_at_start(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path: Path, config: str, expected: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config)
    env = {"HSMBRIDGE_CONFIG": str(path)}
    if "listen" in config:
        env["HSMBRIDGE_GRPC__LISTEN"] = "0.0.0.0:0"
    d = Daemon(softhsm_token, tmp_path, **env)
    with pytest.raises(RuntimeError, match=expected):
        d.start()
