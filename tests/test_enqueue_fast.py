"""The enqueue fast paths (job_insert_now, job_insert_many_now, cached option resolution) store
exactly what the general statements store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgtasks import App, ConfigurationError
from tests.helpers import jobs

COLUMNS = ("task", "queue", "args", "state", "priority", "attempt", "max_attempts", "unique_key", "expires_at")


def _row(rows: list[dict[str, Any]], job_id: int) -> dict[str, Any]:
    return next(r for r in rows if r["id"] == job_id)


def test_a_job_to_run_now_is_stored_like_the_general_insert(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="mail", queue="mail", priority=3, max_attempts=4)
    def mail(to: str, cc: list[str] | None = None) -> None: ...

    fast = mail.delay("a@example.com", cc=["b@example.com"])  # job_insert_now
    general = mail.apply_async(("a@example.com",), {"cc": ["b@example.com"]}, countdown=0)  # job_insert
    rows = jobs(conn, app.schema)
    a, b = _row(rows, fast.id), _row(rows, general.id)
    assert {k: a[k] for k in COLUMNS} == {k: b[k] for k in COLUMNS}
    assert a["state"] == "available" and a["args"] == {"to": "a@example.com", "cc": ["b@example.com"]}
    assert a["run_at"] == a["created_at"], "run_at defaults to now() of the insert"


def test_bulk_fast_path_keeps_input_order_and_mixed_batches_take_the_general_path(
    app: App, conn: psycopg.Connection[Any],
) -> None:
    @app.task(name="add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    refs = add.delay_many([(i, 1) for i in range(500)])  # job_insert_many_now
    rows = jobs(conn, app.schema)
    assert [r["args"] for r in rows] == [{"x": i, "y": 1} for i in range(500)]
    assert [ref.id for ref in refs] == [r["id"] for r in rows]
    assert {r["state"] for r in rows} == {"available"} and {r["max_attempts"] for r in rows} == {20}

    later = add.configure(countdown=60)
    mixed = app.enqueue_many([add.s(1), later.s(2), add.s(3)])  # one row needs job_insert_many
    by_id = {r["id"]: r for r in jobs(conn, app.schema)}
    assert [by_id[ref.id]["state"] for ref in mixed] == ["available", "scheduled", "available"]
    assert [by_id[ref.id]["args"]["x"] for ref in mixed] == [1, 2, 3]


def test_resolved_options_are_cached_per_value_but_still_validated(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="ping")
    def ping() -> None: ...

    slow = ping.configure(queue="slow", priority=-1)
    slow.delay()
    slow.delay()
    ping.configure(queue="fast").delay()
    assert [(r["queue"], r["priority"]) for r in jobs(conn, app.schema)] == [("slow", -1), ("slow", -1), ("fast", 0)]
    naive = datetime(2030, 1, 1)  # a naive datetime: the point of the test
    for _ in range(2):  # a bad option is rejected every time, not only before it was cached
        with pytest.raises(ConfigurationError, match="naive datetime"):
            ping.apply_async(eta=naive)
    eta = datetime.now(UTC) + timedelta(hours=1)
    ping.apply_async(eta=eta)
    assert jobs(conn, app.schema)[-1]["run_at"] == eta
