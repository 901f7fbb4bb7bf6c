"""Run a real `hsmbridge serve` (or `hsmbridge dev`) in a subprocess.

With a `token` (the session's token: SoftHSM2's, or NSS softoken's under `--hsm nss`) it serves
that token; with `token=None` the child
gets no HSM settings at all, as `hsmbridge dev` in a fresh directory would. gRPC and REST listen on
random loopback ports; `address` is the gRPC one, `rest_url` the REST base URL, `metrics_url` the
Prometheus endpoint, and the REST dev bearer token is fixed to `DEV_TOKEN` unless the caller sets
HSMBRIDGE_DEV_TOKEN.

Unless the caller's `env` says otherwise the daemon runs as one process (`server.workers = 1`, no
supervisor) with no import-keypair pool (deterministic: no background RSA keygen competing for
the two cores); tests/test_workers.py and tests/test_keypair_pool.py turn those on.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

DEV_TOKEN = "test-dev-token"


class Daemon:
    def __init__(
        self, token: dict[str, str] | None, workdir: Path, *, args: tuple[str, ...] = ("serve",), **env: str
    ) -> None:
        self.workdir = workdir
        self.args = args
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("HSMBRIDGE_")}
        hsm = (
            {
                "HSMBRIDGE_HSM__TOKEN_LABEL": token["label"],
                "HSMBRIDGE_HSM__PIN_FILE": token["pin_file"],
                "HSMBRIDGE_HSM__POOL_SIZE": "4",
                "HSMBRIDGE_STORE__PATH": str(workdir / "hsmbridge.db"),
                **self._implementation(token),
            }
            if token is not None
            else {}
        )
        if token is None:
            inherited.pop("SOFTHSM2_CONF", None)
        self.env = {
            **inherited,
            **hsm,
            "HSMBRIDGE_GRPC__LISTEN": "127.0.0.1:0",
            "HSMBRIDGE_REST__LISTEN": "127.0.0.1:0",
            "HSMBRIDGE_METRICS__LISTEN": "127.0.0.1:0",
            "HSMBRIDGE_SERVER__WORKERS": "1",
            "HSMBRIDGE_HSM__IMPORT_KEY_POOL_SIZE": "0",
            "HSMBRIDGE_DEV_TOKEN": DEV_TOKEN,
            **env,
        }
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.rest_url = ""
        self.metrics_url = ""
        self.output: list[str] = []

    @staticmethod
    def _implementation(token: dict[str, str]) -> dict[str, str]:
        """SoftHSM2 finds its token through SOFTHSM2_CONF; NSS's softoken (a token with
        `init_args`, tests/conftest.py) through `hsm.init_args`, and needs no software fallback."""
        if "init_args" not in token:
            return {"SOFTHSM2_CONF": token["conf"]}
        return {
            "HSMBRIDGE_HSM__MODULE": token["module"],
            "HSMBRIDGE_HSM__INIT_ARGS": token["init_args"],
            "HSMBRIDGE_HSM__SOFTHSM_DIR": "",
            "HSMBRIDGE_HSM__OAEP_SHA256_FALLBACK": "false",
            "HSMBRIDGE_HSM__EXPORT_SOFTWARE_FALLBACK": "false",
        }

    def start(self, timeout: float = 60) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hsmbridge.cli", *self.args],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            line = lines.get(timeout=timeout)
            if line is None:
                raise RuntimeError("daemon exited:\n" + "".join(self.output))
            if "metrics listening on" in line:  # printed before the REST and gRPC lines
                self.metrics_url = line.rsplit(" ", 1)[1].strip()
            if "REST listening on" in line:  # printed before the gRPC line
                self.rest_url = line.rsplit(" ", 1)[1].strip()
            if "gRPC listening on" in line:
                self.address = line.rsplit(" ", 1)[1].strip()
                return self.address

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first output line containing `text` (the dev banner comes after the listen lines)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.output):
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the daemon's output:\n" + "".join(self.output))

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)
