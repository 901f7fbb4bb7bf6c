"""A throwaway PostgreSQL cluster for the store tests, started once per session in a temp dir.

Why a private cluster rather than a configured server: CI must really test the PostgreSQL
backend without any service set up beforehand, and a developer's own databases must never be
touched. The cluster lives entirely in a temp dir (data, socket, log), listens on 127.0.0.1 on a
free port, and is stopped (``-m immediate``: nothing in it is worth a clean shutdown) and deleted
at the end of the session. Each test gets a fresh schema of one test database in it
(`PostgresCluster.create_schema`).

Why not skip when PostgreSQL is missing: a skipped backend looks green. The fixture fails with
what to do instead (`make test` installs Debian's ``postgresql`` package).

Root: initdb refuses to run as root, and so does the server. Run as root (CI), the cluster
belongs to ``nobody``: the temp dir is chowned to it and initdb/pg_ctl run with its uid/gid and
no supplementary groups (`subprocess` ``user=``/``group=``/``extra_groups=``, so neither runuser
nor sudo is needed). Run as anyone else, the cluster simply belongs to the current user.

Authentication: the Unix socket (in the 0700 temp dir, so only the cluster's owner and root can
reach it) trusts; TCP needs a random password (scram-sha-256), so another local user cannot use
the loopback port meanwhile, and the URLs the tests use carry a password like a real deployment.

The test database is created with an ICU ``en-US`` default collation when the server supports ICU
(Debian's does), so that tests about text order run against a locale that differs from byte
order, as a production cluster initialised with ``en_US.UTF-8`` would.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"
#: The unprivileged account that owns the cluster when the tests run as root.
ROOT_RUNS_AS = "nobody"

MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found under {glob}: the PostgreSQL store "
    "backend cannot be tested. `make test` installs them (Debian package `postgresql`); or run "
    "`apt-get install postgresql`."
)


def psycopg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with initdb and pg_ctl, else from PATH."""

    def major(path: str) -> int:
        digits = re.search(r"/postgresql/(\d+)/", path)
        return int(digits[1]) if digits else -1

    for candidate in sorted(glob(PG_BIN_GLOB), key=major, reverse=True):
        bindir = Path(candidate)
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = Path(initdb).resolve().parent
        if (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _traversable_by_others(path: Path) -> bool:
    """Whether an unprivileged user can reach entries under `path` (every ancestor is o+x)."""
    return all(part.stat().st_mode & stat.S_IXOTH for part in [path, *path.parents])


def _cluster_root(as_root: bool) -> Path:
    """A fresh temp dir the cluster's owner can reach.

    As root, the usual temp dir may sit under a private directory (TMPDIR=/root/tmp, pytest's
    /tmp/pytest-of-root): ``nobody`` could not reach a data dir there, so fall back to /tmp.
    """
    base = Path(tempfile.gettempdir())
    if as_root and not _traversable_by_others(base):
        base = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix="hsmbridge-test-pg-", dir=base))


@dataclass
class PostgresCluster:
    """A running throwaway cluster; `create_database` hands each test an empty database."""

    bindir: Path
    root: Path
    port: int
    password: str
    host: str = "127.0.0.1"
    icu: bool = False
    _admin: Any = field(default=None, repr=False)
    _test_db: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@{self.host}:{self.port}/{database}"

    def _admin_conn(self) -> Any:
        import psycopg

        if self._admin is None:
            self._admin = psycopg.connect(self.url("postgres"), autocommit=True)
        return self._admin

    def create_database(self) -> tuple[str, str]:
        """A new empty database: (name, URL)."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        locale = " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'" if self.icu else ""
        with self._lock:
            self._admin_conn().execute(
                f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'{locale}"  # type: ignore[arg-type]
            )
        return name, self.url(name)

    def drop_database(self, name: str) -> None:
        with self._lock:
            self._admin_conn().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]

    def create_schema(self) -> tuple[str, str]:
        """A new empty schema in the session's test database: (name, URL selecting it).

        Why schemas and not a database per test: CREATE DATABASE costs ~0.3 s, a schema ~1 ms,
        and the URL's ``search_path`` isolates tests just as well (the store never names a
        schema). It also proves the store works in a schema other than ``public``.
        """
        if self._test_db is None:
            self._test_db, _ = self.create_database()
        name = f"s_{uuid.uuid4().hex[:16]}"
        with self._lock, psycopg_connect(self.url(self._test_db)) as conn:
            conn.execute(f"CREATE SCHEMA {name}")  # type: ignore[arg-type]
        return name, f"{self.url(self._test_db)}?options=-csearch_path%3D{name}"

    def drop_schema(self, name: str) -> None:
        assert self._test_db is not None
        with self._lock, psycopg_connect(self.url(self._test_db)) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")  # type: ignore[arg-type]

    def _probe_icu(self) -> None:
        import psycopg

        self.icu = True
        try:
            name, _ = self.create_database()
        except psycopg.Error:
            self.icu = False  # a server built without ICU: the default collation has to do
        else:
            self.drop_database(name)

    def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None


class _Runner:
    """Runs the cluster's commands as its owner: the current user, or `ROOT_RUNS_AS` under root."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam(ROOT_RUNS_AS)
            os.chown(root, owner.pw_uid, owner.pw_gid)
            self.kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
            self.owner: tuple[int, int] | None = (owner.pw_uid, owner.pw_gid)
        else:
            self.owner = None
        root.chmod(0o700)

    def give(self, path: Path) -> None:
        if self.owner is not None:
            os.chown(path, *self.owner)

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.bindir}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.root),
            "TZ": "UTC",
        }
        return subprocess.run(
            [str(self.bindir / tool), *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **self.kwargs,
        )


def _fail(what: str, result: subprocess.CompletedProcess[str], log: Path | None = None) -> None:
    detail = (result.stdout + result.stderr).strip()
    if log is not None and log.exists():
        detail += "\n--- server log ---\n" + log.read_text(errors="replace")[-4000:]
    pytest.fail(f"{what} failed (exit {result.returncode}):\n{detail}")


def start_cluster() -> tuple[PostgresCluster, _Runner]:
    bindir = find_pg_bin()
    if bindir is None:
        pytest.fail(MISSING.format(glob=PG_BIN_GLOB))
    root = _cluster_root(os.geteuid() == 0)
    runner = _Runner(bindir, root)
    data, log = root / "data", root / "server.log"
    password = secrets.token_urlsafe(24)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    runner.give(pwfile)
    result = runner.run(
        "initdb",
        "-D",
        str(data),
        "-U",
        SUPERUSER,
        f"--pwfile={pwfile}",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    )
    pwfile.unlink()
    if result.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        _fail("initdb", result)
    # fsync and friends off: a crash loses a throwaway cluster, and the tests run much faster.
    settings = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    for _attempt in range(5):
        port = _free_port()
        options = f"-k {shlex.quote(str(root))} -p {port} -c listen_addresses=127.0.0.1 {settings}"
        result = runner.run(
            "pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"
        )
        if result.returncode == 0:
            cluster = PostgresCluster(bindir=bindir, root=root, port=port, password=password)
            cluster._probe_icu()
            return cluster, runner
        # Most likely someone took the port between probing and binding; try another.
    stop_cluster(runner, data)
    shutil.rmtree(root, ignore_errors=True)
    _fail("pg_ctl start", result, log)
    raise AssertionError("unreachable")


def stop_cluster(runner: _Runner, data: Path) -> None:
    runner.run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's throwaway cluster (started on first use, so SQLite-only runs never pay)."""
    cluster, runner = start_cluster()
    try:
        yield cluster
    finally:
        cluster.close()
        stop_cluster(runner, cluster.root / "data")
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A URL to a fresh, empty schema of the session's test database, dropped after the test."""
    name, url = postgres_cluster.create_schema()
    try:
        yield url
    finally:
        postgres_cluster.drop_schema(name)
