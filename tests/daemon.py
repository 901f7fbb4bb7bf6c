"""Run a real `hsmbridge serve` in a subprocess against the test session's SoftHSM2 token."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc


class Daemon:
    def __init__(self, token: dict[str, str], workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.env = {
            **os.environ,
            "SOFTHSM2_CONF": token["conf"],
            "HSMBRIDGE_HSM__TOKEN_LABEL": token["label"],
            "HSMBRIDGE_HSM__PIN_FILE": token["pin_file"],
            "HSMBRIDGE_HSM__POOL_SIZE": "4",
            "HSMBRIDGE_STORE__PATH": str(workdir / "hsmbridge.db"),
            "HSMBRIDGE_GRPC__LISTEN": "127.0.0.1:0",
            **env,
        }
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.output: list[str] = []

    def start(self, timeout: float = 60) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hsmbridge.cli", "serve"],
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
            if "gRPC listening on" in line:
                self.address = line.rsplit(" ", 1)[1].strip()
                return self.address

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)
