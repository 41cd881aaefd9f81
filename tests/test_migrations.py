"""Integration tests: migrations are idempotent, safe to run concurrently, and required."""

from __future__ import annotations

import threading

import psycopg
import pytest

from pgtasks import App, SchemaNotMigratedError
from pgtasks.storage import migrations
from tests.helpers import drain


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
