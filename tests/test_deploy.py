"""deploy/: the images, the compose stack and the Kubernetes manifests, checked without Docker or
a cluster.

What can run here, and so in CI, decides the method:

- **Kubernetes manifests** are validated against the official API schemas by
  `kubernetes-validate` (PyPI), which ships the JSON schemas of every supported Kubernetes
  release inside the package: offline, and strict (an unknown or misspelt field fails). They are
  checked against the oldest release the sidecar needs (1.29: native sidecars) and the newest the
  package knows. On top of the schema, the policy this project promises is checked field by field:
  non-root, read-only root filesystem, no capabilities, resources, probes wired to real health,
  the PIN from a Secret file, the vendor module from a volume, the socket shared through fsGroup.
- **Compose**: `docker compose config` would validate the file without an engine, but this
  machine's Docker CLI has no compose plugin (`docker: unknown command: docker compose`) and no
  engine, so the file is parsed and checked here: references, published ports, the config it
  mounts, Prometheus' target.
- **Dockerfiles** cannot be built here (no engine): their stages and instructions are parsed and
  checked, and the builder stage's product (the wheel) is built from exactly the files the
  Dockerfile copies, to prove the image would contain the package data (migrations, stubs).
- **Configuration files** inside manifests and the compose stack (and docs/operating.md's
  examples, tests/test_docs_operating.py) are validated by the models that read them:
  `hsmbridge.config.Config`, and, for keys `Config` does not know yet (`PENDING`), by the model
  that will own each of them once it is wired.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hsmbridge import config as config_module
from hsmbridge import daemon
from hsmbridge.core.store.factory import parse_store_url
from hsmbridge.security.config import SecurityConfig
from hsmbridge.security.tls import TlsConfig

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

#: The oldest Kubernetes the manifests support (native sidecars) and the newest the schemas know.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


# --- configuration: what hsmbridge.config accepts, plus what it will accept once wired ----------


def _listen(value: Any) -> None:
    host, sep, port = str(value).rpartition(":")
    assert sep and host and port.isdigit() and int(port) <= 65535, f"not HOST:PORT: {value!r}"


#: Keys the deploy configs and docs use that `hsmbridge.config.Config` does not define yet, each
#: with the check standing in for it. Once `Config` knows a key, `Config` validates it instead
#: (`_known`) and the test below asks for the entry to be dropped.
PENDING: dict[tuple[str, ...], Callable[[Any], None]] = {}


def _known(path: tuple[str, ...]) -> bool:
    model: Any = config_module.Config
    for name in path:
        fields = getattr(model, "model_fields", {})
        if name not in fields:
            return False
        model = fields[name].annotation
    return True


def validate_config(data: dict[str, Any]) -> config_module.Config:
    """Validate a whole configuration, or a fragment of one (every section has defaults)."""
    data = deepcopy(data)
    for path, check in PENDING.items():
        if _known(path):
            continue
        parent = data
        for name in path[:-1]:
            parent = parent.get(name, {})
        if path[-1] in parent:
            check(parent.pop(path[-1]))
    return config_module.Config.model_validate(data)


def test_every_pending_key_is_really_unknown_to_config_or_validated_by_it() -> None:
    """Say which pending keys are wired already, so nobody forgets to drop them from PENDING."""
    wired = [".".join(path) for path in PENDING if _known(path)]
    if wired:
        pytest.fail(f"hsmbridge.config now defines {wired}: remove them from PENDING in this file")


# --- Kubernetes -----------------------------------------------------------------------------------


def _manifests() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _objects(variant: str) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((K8S / variant).glob("*.yaml")):
        for doc in _documents(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_there_are_two_variants() -> None:
    assert {p.parent.name for p in _manifests()} == {"sidecar", "shared"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", _manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_for_the_kubernetes_api(path: Path, version: str) -> None:
    for doc in _documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_validator_really_rejects_a_misspelt_field() -> None:
    """Strict mode is what catches `readOnlyRootFilesytem`; make sure it is on and working."""
    deployment = _objects("shared")[("Deployment", "hsmbridge")]
    bad = deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


def _pod(variant: str) -> dict[str, Any]:
    deployments = [doc for (kind, _), doc in _objects(variant).items() if kind == "Deployment"]
    assert len(deployments) == 1
    return deployments[0]["spec"]["template"]


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod["spec"].get("initContainers", [])
    yield from pod["spec"]["containers"]


def _hsmbridge(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in _containers(pod) if c["name"] == "hsmbridge"]
    return container


def _config_of(variant: str) -> dict[str, Any]:
    pod = _pod(variant)
    container = _hsmbridge(pod)
    env = {e["name"]: e for e in container.get("env", [])}
    config_path = env["HSMBRIDGE_CONFIG"]["value"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == config_path)
    volume = _volume(pod, mount["name"])
    config_map = _objects(variant)[("ConfigMap", volume["configMap"]["name"])]
    return tomllib.loads(config_map["data"][mount["subPath"]])


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == name]
    return volume


def _mount_of(container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mount `path` lies under (a file inside a mounted directory, or a subPath file)."""
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            return mount
    raise AssertionError(f"{path} is not on any volume mounted into {container['name']}")


@pytest.mark.parametrize("variant", ["sidecar", "shared"])
def test_pods_run_unprivileged_on_a_read_only_root(variant: str) -> None:
    pod = _pod(variant)
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0 and security["fsGroup"] == security["runAsGroup"] == 10001
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["automountServiceAccountToken"] is False
    for container in _containers(pod):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert ctx.get("runAsUser", security["runAsUser"]) != 0
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) >= {"cpu", "memory"}, container["name"]


@pytest.mark.parametrize("variant", ["sidecar", "shared"])
def test_hsmbridge_config_is_valid_and_production_shaped(variant: str) -> None:
    data = _config_of(variant)
    cfg = validate_config(data)
    assert cfg.server.dev is False and cfg.hsm.oaep_sha256_fallback is False and not cfg.hsm.softhsm_dir
    assert parse_store_url(cfg.store.location).backend == "postgresql"
    assert ":@" not in cfg.store.location and "password" not in cfg.store.location
    security = SecurityConfig.model_validate(data["security"])
    assert security.has_credentials and security.audit.fail_closed
    daemon.require_safe_listeners(cfg)  # what `serve` checks before it binds anything


@pytest.mark.parametrize("variant", ["sidecar", "shared"])
def test_secrets_and_the_vendor_module_come_from_volumes(variant: str) -> None:
    pod, cfg = _pod(variant), validate_config(_config_of(variant))
    container = _hsmbridge(pod)
    assert container["image"].startswith("hsmbridge:") and container["args"] == ["serve"]
    # The PIN is a file from a Secret, never an environment variable.
    pin_volume = _volume(pod, _mount_of(container, str(cfg.hsm.pin_file))["name"])
    assert "secret" in pin_volume and pin_volume["secret"]["defaultMode"] & 0o007 == 0
    env = {e["name"]: e for e in container["env"]}
    assert config_module.PIN_ENV not in env
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    # The vendor module comes from a volume, marked as the placeholder it is.
    module_mount = _mount_of(container, cfg.hsm.module)
    assert module_mount["readOnly"] is True
    assert "hostPath" in _volume(pod, module_mount["name"])
    text = (K8S / variant / "deployment.yaml").read_text()
    assert re.search(r"PLACEHOLDER: the HSM vendor's client.*\n(.*\n){0,6}\s+hostPath:", text)
    # Writable paths are volumes: /tmp for the vendor library and Python.
    assert "emptyDir" in _volume(pod, _mount_of(container, "/tmp")["name"])


def _health_command(probe: dict[str, Any]) -> list[str]:
    command = probe["exec"]["command"]
    assert command[:2] == ["hsmbridge", "health"], command
    return command


def test_sidecar_shares_a_group_socket_and_probes_it() -> None:
    pod, data = _pod("sidecar"), _config_of("sidecar")
    cfg = validate_config(data)
    hsmbridge = _hsmbridge(pod)
    # A native sidecar: started (and probed) before the app, stopped after it.
    assert hsmbridge in pod["spec"]["initContainers"] and hsmbridge["restartPolicy"] == "Always"
    assert not [p for p in hsmbridge.get("ports", []) if p["containerPort"] in (50051, 8080)]

    assert cfg.grpc.listen.startswith("unix:/")
    socket = cfg.grpc.listen.removeprefix("unix:")
    assert cfg.grpc.socket_mode == 0o660
    (app,) = pod["spec"]["containers"]
    shared = _mount_of(hsmbridge, socket)
    assert _mount_of(app, socket)["name"] == shared["name"]
    assert _volume(pod, shared["name"])["emptyDir"]["medium"] == "Memory"
    # The app is another user: only the pod's fsGroup lets it connect to the 0660 socket.
    assert app["securityContext"]["runAsUser"] != pod["spec"]["securityContext"]["runAsUser"]
    app_env = {e["name"]: e.get("value") for e in app["env"]}
    assert app_env["HSMBRIDGE_GRPC_ADDRESS"] == cfg.grpc.listen

    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = _health_command(hsmbridge[kind])
        assert command[command.index("--socket") + 1] == socket, kind
    assert "--live" in hsmbridge["livenessProbe"]["exec"]["command"]
    assert "--live" not in hsmbridge["readinessProbe"]["exec"]["command"]


def test_shared_deployment_is_mtls_behind_a_service_with_grpc_probes() -> None:
    objects, pod, data = _objects("shared"), _pod("shared"), _config_of("shared")
    container = _hsmbridge(pod)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == int(data["grpc"]["listen"].rpartition(":")[2])
    health = int(data["grpc"]["health_listen"].rpartition(":")[2])
    assert ports["health"] == health != ports["grpc"]
    assert ports["metrics"] == int(data["metrics"]["listen"].rpartition(":")[2])
    assert container["startupProbe"]["grpc"]["port"] == health
    assert container["readinessProbe"]["grpc"]["port"] == health
    assert container["livenessProbe"]["tcpSocket"]["port"] == "health"

    tls = TlsConfig.model_validate(data["grpc"]["tls"])
    assert tls.client_ca_file and tls.require_client_cert
    for path in (tls.cert_file, tls.key_file, tls.client_ca_file):
        assert "secret" in _volume(pod, _mount_of(container, path)["name"])
    assert SecurityConfig.model_validate(data["security"]).mtls.clients

    service = objects[("Service", "hsmbridge")]
    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}  # not health
    deployment = objects[("Deployment", "hsmbridge")]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2
    pdb = objects[("PodDisruptionBudget", "hsmbridge")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("variant", ["sidecar", "shared"])
def test_config_maps_the_pods_use_are_in_the_variant_or_documented(variant: str) -> None:
    pod, objects = _pod(variant), _objects(variant)
    text = (K8S / variant / "deployment.yaml").read_text()
    for volume in pod["spec"]["volumes"]:
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            assert ("ConfigMap", name) in objects or f"kubectl create configmap {name}" in text
        if "secret" in volume:
            assert f"kubectl create secret generic {volume['secret']['secretName']}" in text
    for container in _containers(pod):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert f"kubectl create secret generic {ref['name']}" in text


# --- Compose ----------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _compose_config() -> dict[str, Any]:
    hsmbridge = _compose()["services"]["hsmbridge"]
    target = hsmbridge["environment"]["HSMBRIDGE_CONFIG"]
    (source,) = [v.split(":")[0] for v in hsmbridge["volumes"] if v.split(":")[1] == target]
    return tomllib.loads((DEPLOY / source).read_text())


def test_compose_stack_is_hsmbridge_postgres_15_and_prometheus() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"hsmbridge", "postgres", "prometheus"}
    assert services["postgres"]["image"].startswith("postgres:15")
    build = services["hsmbridge"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile.dev"
    assert services["hsmbridge"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), (name, source)
            else:
                assert source in declared, (name, source)
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_hsmbridge_config_loads_and_matches_the_stack(tmp_path: Path) -> None:
    services = _compose()["services"]
    data = _compose_config()
    cfg = validate_config(data)
    daemon.require_safe_listeners(cfg)
    path = tmp_path / "hsmbridge.toml"
    path.write_text((DEPLOY / "hsmbridge.compose.toml").read_text())
    assert config_module.load(path, environ={}) == cfg  # nothing pending in the dev stack
    store = parse_store_url(cfg.store.location)
    assert store.backend == "postgresql" and "@postgres:5432/" in cfg.store.location
    env = services["hsmbridge"]["environment"]
    assert env["PGPASSWORD"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert cfg.hsm.pin_file and cfg.hsm.softhsm_dir
    assert Path(cfg.hsm.pin_file).parent == Path(cfg.hsm.softhsm_dir)
    softhsm_volume = next(v for v in services["hsmbridge"]["volumes"] if v.startswith("softhsm:"))
    assert softhsm_volume.split(":")[1] == cfg.hsm.softhsm_dir  # the token survives restarts

    published = {p.rsplit(":", 1)[1] for p in services["hsmbridge"]["ports"]}
    assert published == {cfg.grpc.listen.rpartition(":")[2], cfg.rest.listen.rpartition(":")[2]}
    health = services["hsmbridge"]["healthcheck"]["test"]
    assert health[1:3] == ["hsmbridge", "health"]
    assert health[health.index("--address") + 1].rpartition(":")[2] == cfg.grpc.listen.rpartition(":")[2]

    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    assert target == f"hsmbridge:{cfg.metrics.listen.rpartition(':')[2]}"
    assert cfg.metrics.listen.startswith("0.0.0.0:")
    prom = services["prometheus"]
    assert any(v.startswith("./prometheus.yml:") for v in prom["volumes"])


# --- Dockerfiles --------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            lines.append(pending.strip())
        pending = ""
    result = []
    for line in lines:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def _stages(path: Path) -> list[dict[str, Any]]:
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for word, rest in _instructions(path):
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "steps": []})
        else:
            stages[-1]["steps"].append((word, rest))
    return stages


def _steps(stage: dict[str, Any], word: str) -> list[str]:
    return [rest for w, rest in stage["steps"] if w == word]


BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[\w.+-]+-dev)\b")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.dev"])
def test_images_build_a_wheel_then_install_it_without_build_tools(name: str) -> None:
    builder, final = _stages(DEPLOY / name)
    assert builder["name"] == "builder" and any("pip wheel" in r for r in _steps(builder, "RUN"))
    assert final["image"] == "python:3.11-slim-bookworm" and final["name"] is None
    runs = " ".join(_steps(final, "RUN"))
    assert not BUILD_TOOLS.search(runs), BUILD_TOOLS.search(runs)
    assert "pip install --no-index" in runs and "from=builder" in runs
    (user,) = _steps(final, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert _steps(final, "CMD") == ['["serve"]']
    # Every file copied in is let through .dockerignore (an allow-list).
    allowed = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for stage in (builder, final):
        for copy in _steps(stage, "COPY"):
            sources = [s for s in shlex.split(copy)[:-1] if not s.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert any(source.rstrip("/") == a.rstrip("/") for a in allowed), source


def test_production_image_runs_hsmbridge_serve() -> None:
    _, final = _stages(DEPLOY / "Dockerfile")
    assert [json.loads(e) for e in _steps(final, "ENTRYPOINT")] == [["hsmbridge"]]
    assert "softhsm" not in " ".join(_steps(final, "RUN"))


def test_dev_image_adds_softhsm2_and_initialises_on_start() -> None:
    _, final = _stages(DEPLOY / "Dockerfile.dev")
    assert re.search(r"apt-get install -y --no-install-recommends softhsm2\b", " ".join(_steps(final, "RUN")))
    (entrypoint,) = [json.loads(e) for e in _steps(final, "ENTRYPOINT")]
    (copy,) = [c for c in _steps(final, "COPY") if entrypoint[0] in c]
    script = ROOT / shlex.split(copy)[-2]
    assert os.access(script, os.X_OK)
    body = script.read_text()
    assert "hsmbridge init --softhsm" in body and 'exec hsmbridge "$@"' in body
    # The config the compose stack mounts puts the token where the image made room for it.
    assert validate_config(_compose_config()).hsm.softhsm_dir in " ".join(_steps(final, "RUN"))


def test_the_builder_stages_wheel_carries_the_package_data(tmp_path: Path) -> None:
    """`pip wheel .` on exactly what the builder stage copies: the runtime image gets nothing
    else, so migrations, generated stubs and the entry point must be inside the wheel."""
    context = tmp_path / "src"
    context.mkdir()
    builder, _ = _stages(DEPLOY / "Dockerfile")
    for copy in _steps(builder, "COPY"):
        *sources, _ = shlex.split(copy)
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(origin, context / source)
    out = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            ".",
        ],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("hsmbridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    migrations = sorted(p.name for p in (ROOT / "hsmbridge/core/store/migrations").glob("*.sql"))
    assert migrations and all(f"hsmbridge/core/store/migrations/{m}" in names for m in migrations)
    assert "hsmbridge/py.typed" in names and "hsmbridge/v1/crypto_pb2.py" in names
    assert "hsmbridge/kek_rotation.py" in names
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "hsmbridge = hsmbridge.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
