"""PgBouncer fixtures: real session and transaction pools in front of the test database, via scripts/pgbouncer.

The session-scoped `pgbouncer` fixture starts a session pool (port 6432 when free) and a transaction
pool (6433 when free) in a run dir of its own under /tmp/pgtasks-pgbouncer, and stops them at the
end. PgBouncer listens on loopback TCP and forwards to the test database, over TCP or over its Unix
socket (the embedded server; then, as root, pgbouncer runs as the user that owns the socket's
directory, since that is the only user who can reach a socket in a private data directory).
It needs the `pgbouncer` binary (as root, start.sh installs Debian's package); otherwise the tests
that use it are skipped, or fail when PGTASKS_REQUIRE_ALL=1 or PGTASKS_REQUIRE_PGBOUNCER=1 (CI sets
the first, so a broken setup cannot pass as skipped). Tests start extra throwaway instances
(a tiny pool, one to restart) with `pgbouncer.start(...)` on free ports from 6434 up.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from pgtasks import App
from pgtasks.storage.poolmode import PoolMode
from tests import requirements

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts" / "pgbouncer"
REQUIRE_ENV = "PGTASKS_REQUIRE_PGBOUNCER"
RUN_BASE = Path(os.environ.get("PGTASKS_PGBOUNCER_RUN", "/tmp/pgtasks-pgbouncer"))


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when everything (PGTASKS_REQUIRE_ALL, CI) or PgBouncer is required."""
    requirements.unavailable(f"PgBouncer tests need {reason}", switch=REQUIRE_ENV)


def server_os_user(host: str) -> str:
    """The OS user pgbouncer runs as (when started as root): the owner of a Unix socket directory,
    who can always reach the socket in it; for a TCP server, Debian's `postgres`."""
    if not host.startswith("/"):
        return "postgres"
    return pwd.getpwuid(os.stat(host).st_uid).pw_name


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def reserve_port(port: int) -> bool:
    """Claim `port` for this process among concurrent test runs (a pidfile per port).

    Without it, a run restarting its instance could lose the port to another run's new instance
    in the moment between stop and start.
    """
    folder = RUN_BASE / "ports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / str(port)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(path.read_text() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner == os.getpid():
                return True
            if owner and Path(f"/proc/{owner}").exists():
                return False
            path.unlink(missing_ok=True)  # left by a run that is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def release_ports(ports: list[int]) -> None:
    for port in ports:
        path = RUN_BASE / "ports" / str(port)
        with contextlib.suppress(OSError, ValueError):
            if int(path.read_text()) == os.getpid():
                path.unlink()


@dataclass
class Instance:
    name: str
    port: int
    mode: str
    pool_size: int
    query_wait_timeout: int
    dsn: str


@dataclass
class PgBouncerLab:
    """PgBouncer instances of this test process, all in one run dir and in front of one database."""

    database_url: str
    run_dir: Path
    instances: dict[str, Instance] = field(default_factory=dict)

    def _env(self) -> dict[str, str]:
        params = conninfo_to_dict(self.database_url)
        env = dict(os.environ)
        env.update({
            "PGTASKS_PGBOUNCER_RUN": str(self.run_dir),
            "PGTASKS_PGBOUNCER_PG_HOST": str(params.get("host") or "127.0.0.1"),
            "PGTASKS_PGBOUNCER_PG_PORT": str(params.get("port") or 5432),
            "PGTASKS_PGBOUNCER_DB": str(params.get("dbname") or params.get("user") or "postgres"),
            "PGTASKS_PGBOUNCER_USER": str(params.get("user") or "postgres"),
            "PGTASKS_PGBOUNCER_PASSWORD": str(params.get("password") or ""),
            "PGTASKS_PGBOUNCER_OS_USER": server_os_user(str(params.get("host") or "127.0.0.1")),
        })
        return env

    def start(self, name: str, mode: str, *, port: int | None = None, pool_size: int = 20,
              query_wait_timeout: int = 10) -> Instance:
        """Start (or restart, after stop()) instance `name`; port: the given one, else a free one >= 6434."""
        previous = self.instances.get(name)
        candidates = [previous.port] if previous else [port] if port else []
        candidates += [p for p in range(6434, 6500) if p not in candidates]
        last_error = ""
        for candidate in candidates:
            if previous is None and not (port_free(candidate) and reserve_port(candidate)):
                continue
            spec = f"{name}:{candidate}:{mode}:{pool_size}:{query_wait_timeout}"
            done = subprocess.run([str(SCRIPTS / "start.sh"), spec], env=self._env(), capture_output=True,
                                  text=True, timeout=300)
            if done.returncode == 0:
                params = conninfo_to_dict(self.database_url)
                dsn = make_conninfo(self.database_url, host="127.0.0.1", port=str(candidate),
                                    dbname=str(params.get("dbname") or params.get("user") or "postgres"))
                instance = Instance(name, candidate, mode, pool_size, query_wait_timeout, dsn)
                self.instances[name] = instance
                self._wait_ready(instance)
                return instance
            last_error = done.stderr.strip()
            if previous is None:
                release_ports([candidate])
            if previous is not None or "already in use" not in last_error:
                break  # a real failure, not a port taken by someone else in the meantime
        raise RuntimeError(f"scripts/pgbouncer/start.sh {name} failed: {last_error}")

    def _wait_ready(self, instance: Instance) -> None:
        deadline = time.monotonic() + 15
        while True:
            try:
                with psycopg.connect(instance.dsn, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, name: str) -> None:
        subprocess.run([str(SCRIPTS / "stop.sh"), name], env=self._env(), check=True, capture_output=True,
                       timeout=60)

    def restart(self, name: str, downtime: float = 0.0) -> None:
        """Kill the instance (SIGTERM: every client and server connection dropped) and start it again."""
        instance = self.instances[name]
        self.stop(name)
        time.sleep(downtime)
        self.start(name, instance.mode, pool_size=instance.pool_size,
                   query_wait_timeout=instance.query_wait_timeout)

    def admin(self, name: str, command: str) -> list[dict[str, Any]]:
        """Run a command on the instance's admin console (SHOW POOLS, RECONNECT, ...)."""
        dsn = make_conninfo(self.instances[name].dsn, dbname="pgbouncer")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn, \
                conn.cursor(row_factory=dict_row) as cur:
            cur.execute(command)
            return cur.fetchall() if cur.description else []

    def log(self, name: str) -> str:
        return (self.run_dir / name / "pgbouncer.log").read_text(errors="replace")

    def stop_all(self) -> None:
        subprocess.run([str(SCRIPTS / "stop.sh")], env=self._env(), capture_output=True, timeout=120)
        release_ports([instance.port for instance in self.instances.values()])


@pytest.fixture(scope="session")
def pgbouncer(database_url: str) -> Iterator[PgBouncerLab]:
    """The session pool (`session`) and the transaction pool (`transaction`), started once per run."""
    host = str(conninfo_to_dict(database_url).get("host") or "")
    if not host or "," in host:
        unavailable(f"one explicit host (TCP or a Unix socket directory) in the test database URL, not {host!r}")
    if not (shutil.which("pgbouncer") or os.access("/usr/sbin/pgbouncer", os.X_OK) or os.geteuid() == 0):
        unavailable("the pgbouncer binary (apt-get install pgbouncer), or root so that start.sh installs it")
    lab = PgBouncerLab(database_url, RUN_BASE / f"run-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        lab.start("session", "session", port=6432 if port_free(6432) else None)
        lab.start("transaction", "transaction", port=6433 if port_free(6433) else None)
    except (RuntimeError, OSError, psycopg.Error, subprocess.TimeoutExpired) as exc:
        lab.stop_all()
        unavailable(f"PgBouncer instances that start: {exc}")
    try:
        yield lab
    finally:
        lab.stop_all()
        if os.environ.get("PGTASKS_PGBOUNCER_KEEP") != "1":
            shutil.rmtree(lab.run_dir, ignore_errors=True)


@dataclass(frozen=True)
class Target:
    """Where the code under test connects: PostgreSQL itself or one of the pools."""

    name: str
    dsn: str
    mode: PoolMode


TARGET_NAMES = ["direct", "session", "transaction"]


@pytest.fixture(params=TARGET_NAMES)
def target(request: pytest.FixtureRequest, database_url: str) -> Target:
    """Runs a test three times: direct, through the session pool, through the transaction pool."""
    name: str = request.param
    if name == "direct":
        return Target(name, database_url, PoolMode.DIRECT)
    lab: PgBouncerLab = request.getfixturevalue("pgbouncer")
    return Target(name, lab.instances[name].dsn, PoolMode(name))


@pytest.fixture
def target_app(target: Target, app: App) -> Iterator[App]:
    """An App on the `app` fixture's (migrated) schema that connects through `target`."""
    application = App(target.dsn, schema=app.schema, application_name=f"pgt-{uuid.uuid4().hex[:8]}")
    yield application
    application.close()
