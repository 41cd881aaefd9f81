"""Integration tests: migrations are idempotent, safe to run concurrently, and required."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from pgtasks import App, SchemaNotMigratedError
from pgtasks.storage import migrations
from pgtasks.testing import drain as run_ready_jobs
from tests.helpers import drain, jobs


def test_migrate_is_idempotent_and_reports_status(database_url: str, schema: str) -> None:
    app = App(database_url, schema=schema)
    with app.connect() as conn:
        assert all(s.applied_at is None for s in migrations.status(conn, schema))
    assert app.migrate() == [m.version for m in migrations.available_migrations()]
    assert app.migrate() == []
    with app.connect() as conn:
        assert all(s.applied_at is not None for s in migrations.status(conn, schema))
        assert migrations.pending_sql(conn, schema) == []


def test_concurrent_migrations_apply_once(database_url: str, schema: str) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(App(database_url, schema=schema).migrate())
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(migrations.available_migrations())]


def test_unmigrated_database_says_to_migrate(database_url: str, schema: str) -> None:
    app = App(database_url, schema=schema)

    @app.task
    def noop() -> None: ...

    with pytest.raises(SchemaNotMigratedError, match="pgtasks migrate"):
        noop.delay()
    with pytest.raises(SchemaNotMigratedError, match="pgtasks migrate"):
        drain(app)


def test_statements_do_not_depend_on_search_path(database_url: str, schema: str) -> None:
    """search_path is session state that transaction pooling loses: every statement names the schema."""
    app = App(database_url, schema=schema)
    app.migrate()

    @app.task(name="noop")
    def noop() -> None: ...

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET search_path TO pg_catalog")
        with app.bind(conn):
            ref = noop.delay()
            app.enqueue_many([noop.s(), noop.s()])
        assert app.store.job_get(conn, ref.id) is not None
        assert conn.execute("SELECT to_regclass('public.jobs')").fetchone() == (None,)
    assert drain(app).claimed == 3


# -- upgrading a schema that already holds work -------------------------------------------------

# One job in each state migration 0001 knows, as SQL for the columns that differ from its defaults.
_RUNS_BEFORE = {"attempt": "1", "claims": "1", "attempted_at": "now() - interval '2 minutes'",
                "attempted_by": "'old-worker'"}
ROWS_AT_0001: dict[str, dict[str, str]] = {
    "available": {"unique_key": "'upgrade-available'"},
    "scheduled": {"run_at": "now() + interval '1 hour'", "expires_at": "now() + interval '1 day'"},
    "running": {**_RUNS_BEFORE, "attempted_at": "now()"},
    "retryable": {**_RUNS_BEFORE, "run_at": "now() - interval '1 minute'",
                  "errors": """'[{"attempt": 1, "type": "ValueError", "message": "boom"}]'"""},
    "completed": {**_RUNS_BEFORE, "result": "'\"done\"'", "finalized_at": "now() - interval '1 hour'"},
    "cancelled": {"finalized_at": "now() - interval '1 hour'"},
    "discarded": {**_RUNS_BEFORE, "attempt": "3", "claims": "3", "finalized_at": "now()",
                  "errors": """'[{"attempt": 3, "type": "KeyError", "message": "gone"}]'"""},
}


def fill_0001_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    for n, (state, columns) in enumerate(ROWS_AT_0001.items(), start=1):
        values = {"task": "'upgrade.work'", "queue": "'default'", "args": f"jsonb_build_object('n', {n})",
                  "state": f"'{state}'", "priority": str(n % 3), "max_attempts": "3", **columns}
        conn.execute(f'INSERT INTO "{schema}".jobs ({", ".join(values)}) VALUES ({", ".join(values.values())})')


def rows_by_state(conn: psycopg.Connection[Any], schema: str) -> dict[str, dict[str, Any]]:
    return {row["state"]: row for row in jobs(conn, schema)}


def test_upgrading_from_0001_keeps_every_row_and_workers_run_the_ready_ones(database_url: str, schema: str) -> None:
    """A schema created by migration 0001 holds a job in each of the seven states. Migrating it to
    the latest version keeps every row as it was, gives the new columns their defaults (no cancel
    requested, no progress, no traceparent), and a worker of this version then runs exactly the jobs that are due."""
    app = App(database_url, schema=schema)
    ran: list[int] = []

    @app.task(name="upgrade.work", max_attempts=3)
    def work(n: int) -> int:
        ran.append(n)
        return n * 10

    new_tables = ("leader", "periodic_fires", "workers", "queues", "workflows")
    with app.connect() as conn:
        assert [m.version for m in migrations.migrate(conn, schema, up_to=1)] == [1]
        assert app.store.migration_current_version(conn) == 1
        fill_0001_schema(conn, schema)
        before = rows_by_state(conn, schema)
        upgraded = [m.version for m in migrations.migrate(conn, schema)]
        after = rows_by_state(conn, schema)
        counts = {t: conn.execute(f'SELECT count(*) FROM "{schema}".{t}').fetchone() for t in new_tables}
    assert sorted(before) == sorted(ROWS_AT_0001)
    assert upgraded == list(range(2, migrations.latest_version() + 1))
    assert counts == dict.fromkeys(new_tables, (0,))
    added = {"cancel_requested_at", "progress", "traceparent",  # by 0003 and 0004, NULL on old rows
             "workflow_id", "workflow_step", "wait_delay", "next_ids", "input_from", "input_param",  # and 0005
             "limit_key"}  # and 0006
    defaults = {"wait_count": 0, "input_list": False, "signalled": False}  # 0005: a plain job's values
    assert set(after["available"]) - set(before["available"]) == added | set(defaults)
    assert {s: {k: row[k] for k in before[s]} for s, row in after.items()} == before  # every row, as it was
    assert {s: {k: row[k] for k in added} for s, row in after.items()} == dict.fromkeys(before, dict.fromkeys(added))
    assert {s: {k: row[k] for k in defaults} for s, row in after.items()} == dict.fromkeys(before, defaults)

    outcomes = run_ready_jobs(app, queues=["default"])
    available, retryable = before["available"]["id"], before["retryable"]["id"]
    assert sorted(ran) == [1, 4]  # the available job and the retry that is due, each once
    assert sorted((o.id, o.state) for o in outcomes) == [(available, "completed"), (retryable, "completed")]
    with app.connect() as conn:
        final = {row["id"]: row for row in jobs(conn, schema)}
    assert (final[available]["result"], final[retryable]["result"], final[retryable]["attempt"]) == (10, 40, 2)
    untouched = [before[s] for s in ("scheduled", "running", "completed", "cancelled", "discarded")]
    assert [(final[row["id"]]["state"], final[row["id"]]["attempt"]) for row in untouched] == [
        (row["state"], row["attempt"]) for row in untouched]
