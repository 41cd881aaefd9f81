"""The dashboard's queries on a real database: the charts counted incrementally agree with a full
count, and the reads of unfinished jobs go through the fetch and running partial indexes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgtasks import App
from pgtasks.dashboard.data import HOUR, MARGIN, TimedCache, count_minutes
from pgtasks.storage.dashboard import JobQuery

INSERT = """
INSERT INTO "{schema}".jobs (task, queue, state, attempt, run_at, created_at, attempted_at, finalized_at, errors)
SELECT 't', %(queue)s, %(state)s::"{schema}".job_state, 1, now(), now() - interval '2 hours',
       now() - make_interval(secs => %(ago)s + 0.5),
       CASE WHEN %(state)s IN ('completed', 'cancelled', 'discarded') THEN now() - make_interval(secs => %(ago)s) END,
       %(errors)s::jsonb
RETURNING id
"""


def add_job(conn: psycopg.Connection[Any], schema: str, state: str, ago: float, *, errors_ago: tuple[float, ...] = (),
            queue: str = "default") -> int:
    """A job in `state`, finished `ago` seconds before the database's now (if final), with one
    error entry per `errors_ago` (seconds before now)."""
    now = conn.execute("SELECT now()").fetchone()
    assert now is not None
    errors = [{"attempt": n + 1, "at": (now[0] - timedelta(seconds=s)).isoformat(), "type": "Boom",
               "message": "boom", "traceback": None} for n, s in enumerate(errors_ago)]
    row = conn.execute(INSERT.format(schema=schema).encode(),
                       {"state": state, "ago": ago, "errors": json.dumps(errors), "queue": queue}).fetchone()
    assert row is not None
    return int(row[0])


def totals(series: dict[str, list[float]]) -> dict[str, int]:
    return {name: int(sum(series[name])) for name in ("completed", "retried", "discarded")}


def test_a_chart_counted_incrementally_adds_what_finished_since_and_keeps_older_minutes(
        app: App, conn: psycopg.Connection[Any]) -> None:
    schema = app.schema
    old = add_job(conn, schema, "completed", 50 * 60)
    add_job(conn, schema, "completed", 30 * 60, errors_ago=(31 * 60,))  # one retry, then done
    add_job(conn, schema, "discarded", 20 * 60, errors_ago=(22 * 60, 20 * 60))  # the last error ended it
    add_job(conn, schema, "cancelled", 10 * 60, errors_ago=(10 * 60,))  # cancelling is no retry
    add_job(conn, schema, "retryable", 0, errors_ago=(5 * 60,))  # waiting after a failed attempt
    first = count_minutes(app, HOUR, datetime.now(UTC), None)
    assert totals(first.series) == {"completed": 2, "retried": 3, "discarded": 1}

    # Since that count: a job finished just now, one whose transaction committed late (finished
    # within MARGIN before the count ended), and the oldest job deleted.
    add_job(conn, schema, "completed", 1)
    late = (datetime.now(UTC) - first.until + MARGIN / 2).total_seconds()
    add_job(conn, schema, "completed", late, errors_ago=(late + 1,))
    conn.execute(f'DELETE FROM "{schema}".jobs WHERE id = %s'.encode(), (old,))

    now = datetime.now(UTC)
    incremental = count_minutes(app, HOUR, now, first)
    full = count_minutes(app, HOUR, now, None)
    # Both new jobs counted, the late one with its retry; the deleted job's minute was counted
    # before and is kept as it was, which only a full count forgets.
    assert totals(incremental.series) == {"completed": 4, "retried": 4, "discarded": 1}
    assert totals(full.series) == {"completed": 3, "retried": 4, "discarded": 1}
    deleted_minute = min(m for m, row in first.rows.items() if row["completed"])
    assert {m: r for m, r in incremental.rows.items() if m != deleted_minute} == \
           {m: r for m, r in full.rows.items() if m != deleted_minute}
    assert incremental.series["t"] == full.series["t"] and len(full.series["t"]) == HOUR // 60 + 1

    # Counted again after longer than the window: nothing is kept from the old count.
    later = count_minutes(app, HOUR, now + timedelta(hours=2), incremental)
    assert totals(later.series) == {"completed": 0, "retried": 0, "discarded": 0}


def test_clear_expires_values_but_an_update_still_sees_the_last_one() -> None:
    cache = TimedCache()
    assert cache.get("a", 60, lambda: 1) == 1
    assert cache.get("a", 60, lambda: 2) == 1
    seen: list[int | None] = []

    def bump(previous: int | None) -> int:
        seen.append(previous)
        return (previous or 0) + 10

    assert cache.update("b", 60, bump) == 10
    assert cache.update("b", 60, bump) == 10
    cache.clear()
    assert cache.get("a", 60, lambda: 3) == 3
    assert cache.update("b", 60, bump) == 20
    assert seen == [None, 10]
    assert cache.computed == 4


def plan(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> str:
    rows = conn.execute(("EXPLAIN " + query).encode(), params).fetchall()
    return "\n".join(str(r[0]) for r in rows)


@pytest.fixture
def mixed(app: App, conn: psycopg.Connection[Any]) -> App:
    """Jobs in every state, many of them finished, analyzed; the planner told to avoid a scan of the
    table wherever an index can answer (a table this small would be scanned whatever its indexes)."""
    schema = app.schema
    conn.execute(f"""INSERT INTO "{schema}".jobs (task, queue, state, finalized_at)
                     SELECT 't', 'q' || (g % 3), 'completed', now() - g * interval '1 s'
                     FROM generate_series(1, 3000) AS g""".encode())
    for n, state in enumerate(["available", "available", "scheduled", "retryable", "running", "running"]):
        add_job(conn, schema, state, 0, queue=f"q{n % 3}", errors_ago=(60,) if state == "retryable" else ())
    conn.execute(f'ANALYZE "{schema}".jobs'.encode())
    return app


def test_reads_of_unfinished_jobs_go_through_the_partial_indexes(mixed: App, conn: psycopg.Connection[Any]) -> None:
    q = mixed.store.queries
    conn.execute(b"SET enable_seqscan = off")
    counts = plan(conn, q["dashboard_unfinished_counts"], {})
    assert "jobs_fetch_idx" in counts and "jobs_running_by_idx" in counts, counts
    assert dict(conn.execute(q["dashboard_unfinished_counts"]).fetchall()) == {
        "available": 2, "scheduled": 1, "retryable": 1, "running": 2}
    names = plan(conn, q["dashboard_queue_names"], {})
    assert "jobs_fetch_idx" in names and "jobs_running_by_idx" in names, names
    chart = plan(conn, q["dashboard_throughput"], {"seconds": 600, "now": None})
    assert "jobs_running_by_idx" in chart and "Seq Scan on jobs" not in chart, chart

    for states, expected in ((["scheduled", "running"], 3), (["available"], 2), (["retryable", "completed"], 3001)):
        params = JobQuery(states=states).params()
        count = plan(conn, q["dashboard_job_match_count"], params)
        if "running" in states:
            assert "jobs_running_by_idx" in count, count
        if "completed" not in states:
            assert "jobs_fetch_idx" in count and "Seq Scan on jobs" not in count, count
        row = conn.execute(q["dashboard_job_match_count"], params).fetchone()
        assert row is not None and row[0] == expected, (states, row)
        ids = [r[0] for r in conn.execute(q["dashboard_job_match_ids"], params | {"before": None, "limit": 5000})]
        assert len(ids) == expected and ids == sorted(ids, reverse=True)
