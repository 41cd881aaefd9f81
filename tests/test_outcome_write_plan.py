"""The outcome write is looked up by primary key however stale the statistics are.

With `state = 'running'` in its WHERE clause the statement matched the predicate of the partial
index jobs_running_by_idx, and with statistics from before a burst (they always lag one, and this
cluster runs without autovacuum) the planner drove the join from that index: it re-ran the unnest
for every running job, and eight workers with 100,000 jobs running took minutes a write. The
plan is read with EXPLAIN, for a custom and for a generic (prepared) plan, so this test checks the
planner's choice itself, not a duration.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from pgtasks import App
from pgtasks.core.models import JobState, Outcome
from pgtasks.storage.jobs import _outcome_params


@pytest.fixture
def stale_running(app: App, conn: psycopg.Connection[Any]) -> list[int]:
    """5,000 running jobs the statistics know nothing about: analyzed while they were available."""
    schema = app.schema
    rows = conn.execute(f"""INSERT INTO "{schema}".jobs (task, queue, state)
                            SELECT 't', 'q', 'available' FROM generate_series(1, 5000) RETURNING id""").fetchall()
    conn.execute(f'ANALYZE "{schema}".jobs')
    conn.execute(f"""UPDATE "{schema}".jobs SET state = 'running', claims = 1, attempted_by = 'w',
                     attempted_at = now()""")
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
def test_the_outcome_write_looks_each_job_up_by_its_primary_key(
        app: App, conn: psycopg.Connection[Any], stale_running: list[int], plan_cache_mode: str) -> None:
    query = app.store.queries["job_set_outcome_many"]
    outcomes = [Outcome(job_id, 1, JobState.COMPLETED) for job_id in stale_running[:50]]
    params = _outcome_params(outcomes, datetime.now(UTC))
    # A server-side PREPARE of the statement, so that plan_cache_mode decides between a custom
    # plan (made for these values) and the generic one a prepared statement runs with.
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", query)))
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m[1]) + 1}", query)
    types = ", ".join("timestamptz" if name == "now" else "text" for name in names)
    values = [params[name] if name == "now" or isinstance(params[name], str) else None for name in names]
    assert None not in values[:-1], "every array is sent as a literal when no outcome has an error"
    # Client-side binding (simple protocol): the $n of the PREPARE are the server's, not psycopg's.
    with conn.transaction(), psycopg.ClientCursor(conn) as cur:
        cur.execute(f"SET LOCAL plan_cache_mode = {plan_cache_mode}".encode())
        cur.execute(f"PREPARE outcome_write({types}) AS {numbered}".encode())
        placeholders = ", ".join(["%s"] * len(names))
        rows = cur.execute(f"EXPLAIN EXECUTE outcome_write({placeholders})".encode(), values).fetchall()
        cur.execute(b"DEALLOCATE outcome_write")
    plan = "\n".join(str(r[0]) for r in rows)
    assert "jobs_pkey" in plan and "Index Cond: (id = o.id)" in plan, plan
    assert "jobs_running_by_idx" not in plan, plan
    # And the write itself finds its 50 jobs.
    written = conn.execute(query.encode(), params).fetchall()
    assert sorted(int(r[0]) for r in written) == sorted(stale_running[:50])
