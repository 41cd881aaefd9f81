"""The rescuer and the claims fence: jobs of silent workers go back to retry, and an attempt that no
longer owns its job cannot write its outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg

from pgtasks import App
from pgtasks.core.models import ClaimedJob, ErrorEntry, JobState, Outcome
from pgtasks.leadership.heartbeat import Heartbeat
from pgtasks.leadership.rescuer import Rescuer
from pgtasks.worker.completer import Completer
from tests.helpers import jobs, run_with_pool

T = TypeVar("T")


async def claim(app: App, pool: Any, worker_id: str, now: datetime | None = None) -> ClaimedJob:
    async with pool.connection() as conn:
        claimed = await app.store.ajob_fetch_available(conn, queues=["default"], limit=1, worker_id=worker_id, now=now)
    assert len(claimed) == 1
    return claimed[0]


async def beat(app: App, pool: Any, worker_id: str, held: list[int], now: datetime | None = None) -> None:
    heartbeat = Heartbeat(pool, app.store, worker_id=worker_id, queues=["default"], concurrency=1,
                          held_jobs=lambda: held, interval=1.0)
    await heartbeat.run_once(now=now)


def test_rescues_jobs_of_silent_missing_and_forgetful_workers_only(app: App, conn: psycopg.Connection[Any],
                                                                   schema: str) -> None:
    @app.task(max_attempts=3)
    def work(n: int) -> None: ...

    ids = [work.delay(n).id for n in range(5)]
    now = datetime.now(UTC)
    later = now + timedelta(seconds=100)

    async def body(pool: Any) -> list[Any]:
        # Jobs 0-3 are claimed at `now`; 4 stays available.
        silent = await claim(app, pool, "silent")        # worker stopped sending heartbeats at `now`
        gone = await claim(app, pool, "gone")            # worker row never written (crashed early)
        forgot = await claim(app, pool, "forgetful")     # worker alive, but does not list the job
        alive = await claim(app, pool, "alive")          # worker alive and lists its job
        await beat(app, pool, "silent", [silent.id], now=now)
        await beat(app, pool, "forgetful", [], now=later)
        await beat(app, pool, "alive", [alive.id], now=later)
        rescuer = Rescuer(pool, app.store, rescue_after=60, interval=1)
        too_early = await rescuer.rescue(now=now + timedelta(seconds=30))
        rescued = await rescuer.rescue(now=later)
        assert too_early == []
        return [silent.id, gone.id, forgot.id, alive.id, rescued]

    silent_id, gone_id, forgot_id, alive_id, rescued = run_with_pool(app, body)
    assert sorted(r.id for r in rescued) == sorted([silent_id, gone_id, forgot_id])
    rows = {row["id"]: row for row in jobs(conn, schema)}
    assert rows[alive_id]["state"] == "running"
    assert rows[ids[4]]["state"] == "available"
    for job_id, reason in ((silent_id, "went silent"), (gone_id, "is gone (no heartbeat row)"),
                           (forgot_id, "no longer reports running this job")):
        row = rows[job_id]
        assert row["state"] == "retryable" and row["attempt"] == 1
        [error] = row["errors"]
        assert error["type"] == "Rescued" and error["attempt"] == 1 and reason in error["message"]
        assert row["attempted_by"] in error["message"]


def test_a_rescued_job_out_of_attempts_is_discarded(app: App, conn: psycopg.Connection[Any], schema: str) -> None:
    @app.task(max_attempts=1)
    def once() -> None: ...

    job = once.delay()

    async def body(pool: Any) -> None:
        await claim(app, pool, "crashed")
        rescued = await Rescuer(pool, app.store, rescue_after=1, interval=1).rescue(
            now=datetime.now(UTC) + timedelta(seconds=5))
        assert [(r.id, r.state) for r in rescued] == [(job.id, "discarded")]

    run_with_pool(app, body)
    [row] = jobs(conn, schema)
    assert row["state"] == "discarded" and row["finalized_at"] is not None
    assert row["errors"][0]["type"] == "Rescued"


def test_a_rescued_job_an_operator_asked_to_cancel_ends_cancelled(
    app: App, conn: psycopg.Connection[Any], schema: str
) -> None:
    @app.task
    def doomed() -> None: ...

    job = doomed.delay()

    async def body(pool: Any) -> None:
        await claim(app, pool, "crashed")
        conn.execute(f'UPDATE "{schema}".jobs SET cancel_requested_at = now() WHERE id = %s', [job.id])
        rescued = await Rescuer(pool, app.store, rescue_after=1, interval=1).rescue(
            now=datetime.now(UTC) + timedelta(seconds=5))
        assert [(r.id, r.state) for r in rescued] == [(job.id, "cancelled")]

    run_with_pool(app, body)
    [row] = jobs(conn, schema)
    assert row["state"] == "cancelled" and row["finalized_at"] is not None


def test_a_lost_claim_an_operator_asked_to_cancel_ends_cancelled(
    app: App, conn: psycopg.Connection[Any], schema: str
) -> None:
    @app.task
    def doomed() -> None: ...

    kept, lost = doomed.delay(), doomed.delay()

    async def body(pool: Any) -> None:
        await claim(app, pool, "w1")
        await claim(app, pool, "w1")
        conn.execute(f'UPDATE "{schema}".jobs SET cancel_requested_at = now() WHERE id = %s', [lost.id])
        async with pool.connection() as aconn:
            released = await app.store.ajob_release_unknown_claims(aconn, worker_id="w1", known_ids=[kept.id])
        assert released == [lost.id]

    run_with_pool(app, body)
    states = {row["id"]: (row["state"], row["attempt"]) for row in jobs(conn, schema)}
    assert states == {kept.id: ("running", 1), lost.id: ("cancelled", 0)}


def test_a_stale_completion_is_rejected_and_leaves_the_new_outcome_untouched(
    app: App, conn: psycopg.Connection[Any], schema: str,
) -> None:
    @app.task
    def work() -> str:
        return "done"

    job = work.delay()
    later = datetime.now(UTC) + timedelta(seconds=120)

    async def body(pool: Any) -> tuple[int, int]:
        old = await claim(app, pool, "old-worker")
        await beat(app, pool, "old-worker", [old.id], now=datetime.now(UTC))
        [rescued] = await Rescuer(pool, app.store, rescue_after=60, interval=1).rescue(now=later)
        assert rescued.id == job.id
        new = await claim(app, pool, "new-worker", now=later)
        assert (old.claims, new.claims) == (1, 2)

        completer = Completer(pool, app.store)
        completer.start()
        # The old attempt comes back while the new one runs: its outcome is fenced out.
        completer.submit(Outcome(old.id, old.claims, JobState.COMPLETED, result=b'"stale while running"'))
        assert await completer.flush(timeout=10)
        async with pool.connection() as c:
            during = await app.store.ajob_get(c, job.id)
        assert during is not None and during["state"] == "running" and during["result"] is None
        # The new attempt completes; then the old one reports a failure: rejected again.
        completer.submit(Outcome(new.id, new.claims, JobState.COMPLETED, result=b'"fresh"'))
        assert await completer.flush(timeout=10)
        error = ErrorEntry(old.attempt, datetime.now(UTC), "RuntimeError", "stale failure")
        completer.submit(Outcome(old.id, old.claims, JobState.RETRYABLE, retry_in=1.0, error=error))
        assert await completer.flush(timeout=10)
        await completer.stop()
        return completer.written, completer.rejected

    written, rejected = run_with_pool(app, body)
    assert (written, rejected) == (1, 2)
    [row] = jobs(conn, schema)
    assert row["state"] == "completed" and json.loads(json.dumps(row["result"])) == "fresh"
    assert row["attempt"] == 2 and row["attempted_by"] == "new-worker"
    assert [e["type"] for e in row["errors"]] == ["Rescued"]
