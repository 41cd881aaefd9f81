"""Server-side prepared statements: on where a connection reaches PostgreSQL itself, off behind PgBouncer,
"off" always wins, and a prepared-statement error turns them off on that connection."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgtasks import App, ConfigurationError, DatabaseError
from pgtasks.storage.prepared import (
    PREPARE_THRESHOLD,
    PREPARED_STATEMENTS_ENV,
    PreparedStatements,
    resolve_prepared_statements,
)
from pgtasks.worker import Worker
from tests.helpers import drain, logged, wait_for
from tests.pgbouncer_fixtures import PgBouncerLab

RUNS = PREPARE_THRESHOLD + 3  # enough runs of one statement for psycopg to prepare it


def prepared_statements(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> list[str]:
    """The statements prepared on `conn`'s own backend (pg_prepared_statements is per session).

    Read with the libpq connection itself, so that psycopg neither counts nor prepares this query."""
    result = conn.pgconn.exec_(b"SELECT statement FROM pg_prepared_statements")
    return [result.get_value(row, 0).decode() for row in range(result.ntuples)]  # type: ignore[union-attr]


def deallocate_behind_psycopgs_back(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """DEALLOCATE ALL on the session, unseen by psycopg (which would forget its statements if it saw
    it): its next prepared execution finds no statement, as behind a pooler that switched backends."""
    conn.pgconn.exec_(b"DEALLOCATE ALL")


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PREPARED_STATEMENTS_ENV, raising=False)


def app_on(dsn: str, schema: str, **options: Any) -> App:
    return App(dsn, schema=schema, application_name=f"pgt-{uuid.uuid4().hex[:8]}", **options)


@pytest.fixture
def direct_app(no_env: None, database_url: str, app: App) -> Iterator[App]:
    application = app_on(database_url, app.schema)
    yield application
    application.close()


# -- the setting -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "env", "expected"), [
    (None, None, "auto"), ("on", None, "on"), (True, None, "on"), (False, None, "off"), (None, "on", "on"),
    (None, " OFF ", "off"), ("on", "off", "off"), ("off", "on", "off"), (True, "auto", "on"), ("auto", "on", "auto"),
])
def test_off_from_either_source_wins_else_the_argument_then_the_variable(
        monkeypatch: pytest.MonkeyPatch, given: str | bool | None, env: str | None, expected: str) -> None:
    if env is None:
        monkeypatch.delenv(PREPARED_STATEMENTS_ENV, raising=False)
    else:
        monkeypatch.setenv(PREPARED_STATEMENTS_ENV, env)
    assert resolve_prepared_statements(given) is PreparedStatements(expected)


@pytest.mark.parametrize("bad", ["yes", "1", 1, "prepared"])
def test_an_unknown_value_names_the_setting_and_the_choices(no_env: None, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"prepared_statements=.*'auto'.*'on'.*'off'"):
        App("postgresql://nowhere/x", prepared_statements=bad)


def test_an_unknown_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREPARED_STATEMENTS_ENV, "sometimes")
    with pytest.raises(ConfigurationError, match=rf"\${PREPARED_STATEMENTS_ENV}='sometimes'"):
        App("postgresql://nowhere/x")


# -- direct: the App's pools, its one-off connections and the worker's pool prepare ------------------


def test_the_app_pool_prepares_the_enqueue_on_a_direct_connection(direct_app: App) -> None:
    @direct_app.task
    def noop(n: int) -> None: ...

    for n in range(RUNS):
        noop.delay(n)
    with direct_app.database.pool().connection() as conn:  # the pool's only connection: nothing else ran
        assert conn.prepare_threshold == PREPARE_THRESHOLD
        assert any(f'INSERT INTO "{direct_app.schema}".jobs' in s for s in prepared_statements(conn))


def test_the_async_pool_and_a_one_off_connection_prepare_on_a_direct_connection(direct_app: App) -> None:
    @direct_app.task
    def noop(n: int) -> None: ...

    async def enqueue() -> list[tuple[int | None, list[str]]]:
        for n in range(RUNS * direct_app.pool_size):  # the pool may have grown: RUNS for each connection
            await noop.adelay(n)
        pool = await direct_app.database.apool()
        # Every connection the pool holds, at once (the pool hands them out in turn).
        conns = [await pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
        try:
            return [(conn.prepare_threshold, prepared_statements(conn)) for conn in conns]
        finally:
            for conn in conns:
                await pool.putconn(conn)

    found = asyncio.run(enqueue())
    assert {threshold for threshold, _ in found} == {PREPARE_THRESHOLD}
    assert any(f'INSERT INTO "{direct_app.schema}".jobs' in s for _, statements in found for s in statements)
    with direct_app.connect() as conn:
        assert conn.prepare_threshold == PREPARE_THRESHOLD


def test_the_worker_pool_prepares_on_a_direct_connection_and_its_start_line_says_so(
        direct_app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    worker = direct_app.worker(poll_interval=0.05)

    async def run() -> tuple[int | None, list[str]]:
        task = asyncio.create_task(worker.arun())
        await worker.started.wait()
        assert worker.pool is not None
        async with worker.pool.connection() as conn:  # one of the worker's own connections
            for _ in range(RUNS):
                await direct_app.store.ajob_fetch_available(conn, queues=["nothing-here"], limit=1,
                                                            worker_id=worker.worker_id, tasks=None)
            found = conn.prepare_threshold, prepared_statements(conn)
        worker.request_stop()
        await task
        return found

    threshold, statements = asyncio.run(run())
    assert threshold == PREPARE_THRESHOLD
    assert any("FOR UPDATE SKIP LOCKED" in s for s in statements), statements
    (line,) = logged(caplog.records, "worker.connections")
    assert line["prepared"] == "on"


@pytest.mark.parametrize("how", ["argument", "env"])
def test_off_wins_on_a_direct_connection(no_env: None, database_url: str, app: App, how: str,
                                         monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    if how == "env":
        monkeypatch.setenv(PREPARED_STATEMENTS_ENV, "off")
    application = app_on(database_url, app.schema, prepared_statements="off" if how == "argument" else True)
    try:
        assert application.prepared_statements == "off"

        @application.task
        def noop(n: int) -> None: ...

        for n in range(RUNS):
            noop.delay(n)
        with application.database.pool().connection() as conn:
            assert conn.prepare_threshold is None
            assert prepared_statements(conn) == []
        with application.connect() as conn:
            assert conn.prepare_threshold is None
        caplog.set_level(logging.INFO, logger="pgtasks")
        assert drain(application).claimed == RUNS
        (line,) = logged(caplog.records, "worker.connections")
        assert line["prepared"] == "never"
    finally:
        application.close()


# -- behind PgBouncer: never prepared in auto -----------------------------------------------------------


@pytest.mark.pgbouncer
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_behind_pgbouncer_auto_never_prepares_and_200_enqueues_drain(
        no_env: None, pgbouncer: PgBouncerLab, app: App, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    application = app_on(pgbouncer.instances[mode].dsn, app.schema)
    try:
        @application.task
        def noop(n: int) -> None: ...

        for n in range(200):  # one statement, far past the threshold, on the pool's connections
            noop.delay(n)
        for n in range(RUNS):
            asyncio.run(noop.adelay(n))  # a fresh loop each time: a new async pool, and so a new connection
        with application.database.pool().connection() as conn:
            assert conn.prepare_threshold is None
        with application.connect() as conn:
            assert conn.prepare_threshold is None
        caplog.set_level(logging.INFO, logger="pgtasks")
        worker = drain(application, concurrency=4)
        assert worker.claimed == 200 + RUNS
        assert worker.completer is not None and worker.completer.written == 200 + RUNS
        (line,) = logged(caplog.records, "worker.connections")
        assert line["database_mode"] == mode
        assert line["prepared"] == "off"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("pgtasks")]
    finally:
        application.close()


@pytest.mark.pgbouncer
def test_on_behind_a_session_pooler_is_the_users_choice(no_env: None, pgbouncer: PgBouncerLab, app: App) -> None:
    application = app_on(pgbouncer.instances["session"].dsn, app.schema, prepared_statements="on")
    try:
        with application.database.pool().connection() as conn:
            assert conn.prepare_threshold == PREPARE_THRESHOLD
    finally:
        application.close()


# -- the guard: a prepared-statement error turns preparing off on that connection -------------------------


def test_a_lost_prepared_statement_turns_preparing_off_and_the_next_call_succeeds(
        direct_app: App, caplog: pytest.LogCaptureFixture) -> None:
    store = direct_app.store
    with direct_app.connect() as conn:
        for _ in range(RUNS):
            version = store.migration_current_version(conn)
        assert prepared_statements(conn), "the statement should be prepared by now"
        deallocate_behind_psycopgs_back(conn)
        with pytest.raises(DatabaseError, match="does not exist") as raised:
            store.migration_current_version(conn)
        assert isinstance(raised.value.__cause__, psycopg.errors.InvalidSqlStatementName)
        assert conn.prepare_threshold is None
        assert store.migration_current_version(conn) == version  # unprepared now
        for _ in range(RUNS):
            store.migration_current_version(conn)
        assert prepared_statements(conn) == []
    (warning,) = logged(caplog.records, "connection.prepared_statements_off")
    assert "PGTASKS_PREPARED_STATEMENTS=off" in warning["action"]
    assert "does not exist" in warning["error"]


def test_the_async_guard_and_the_worker_carry_on_unprepared(direct_app: App, caplog: pytest.LogCaptureFixture) -> None:
    @direct_app.task
    def noop(n: int) -> None: ...

    store = direct_app.store
    worker = direct_app.worker(poll_interval=0.05)

    async def run() -> None:
        task = asyncio.create_task(worker.arun())
        await worker.started.wait()
        assert worker.pool is not None
        async with worker.pool.connection() as conn:
            for _ in range(RUNS):
                await store.amigration_current_version(conn)
            deallocate_behind_psycopgs_back(conn)
            with pytest.raises(DatabaseError):
                await store.amigration_current_version(conn)
            assert conn.prepare_threshold is None
            await store.amigration_current_version(conn)
        for n in range(20):  # the worker, whichever of its connections it takes, still runs them
            await noop.adelay(n)
        await asyncio.to_thread(wait_for, lambda: worker.completer is not None and worker.completer.written == 20)
        worker.request_stop()
        await task

    asyncio.run(run())
    assert len(logged(caplog.records, "connection.prepared_statements_off")) == 1


def test_a_migration_that_adds_columns_leaves_prepared_statements_valid(direct_app: App, database_url: str) -> None:
    """pgtasks' queries name their columns (no SELECT * or RETURNING * of a table), so a column a
    later migration adds does not change what a prepared statement returns."""
    @direct_app.task
    def noop(n: int) -> None: ...

    worker: Worker = direct_app.worker(poll_interval=0.05)

    async def run() -> None:
        pool = await direct_app.database.apool()
        async with pool.connection() as conn:
            for n in range(RUNS):
                await noop.adelay(n)
                await direct_app.store.ajob_fetch_available(conn, queues=["default"], limit=1,
                                                            worker_id=worker.worker_id, tasks=None)
            assert any("FOR UPDATE SKIP LOCKED" in s for s in prepared_statements(conn))  # the claim
            with psycopg.connect(database_url, autocommit=True) as other:
                other.execute(f'ALTER TABLE "{direct_app.schema}".jobs ADD COLUMN later_column text')
            await noop.adelay(0)
            claimed = await direct_app.store.ajob_fetch_available(conn, queues=["default"], limit=1,
                                                                  worker_id=worker.worker_id, tasks=None)
            assert conn.prepare_threshold == PREPARE_THRESHOLD  # no error: still preparing
            assert len(claimed) == 1

    asyncio.run(run())


def test_a_migration_that_changes_a_returned_type_is_caught_by_the_guard(
        direct_app: App, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A changed column type is what would break a prepared statement ("cached plan must not change
    result type"); the guard turns preparing off on that connection and the retry succeeds."""
    store = direct_app.store
    with direct_app.connect() as conn:
        for _ in range(RUNS):
            version = store.migration_current_version(conn)
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute(f'ALTER TABLE "{direct_app.schema}".migrations ALTER COLUMN version TYPE bigint')
        with pytest.raises(DatabaseError, match="cached plan must not change result type"):
            store.migration_current_version(conn)
        assert conn.prepare_threshold is None
        assert store.migration_current_version(conn) == version
    assert len(logged(caplog.records, "connection.prepared_statements_off")) == 1
