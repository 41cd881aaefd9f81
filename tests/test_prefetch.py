"""Claiming ahead of free slots (worker/prefetch.py): only while jobs are short, and never lost on shutdown."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from pgtasks import App
from pgtasks.worker.prefetch import FetchAhead
from tests.helpers import drain, jobs, wait_for, worker_thread


def test_long_jobs_are_never_claimed_ahead(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="slowish")
    def slowish() -> None:
        threading.Event().wait(0.08)

    slowish.delay_many([()] * 12)
    worker = drain(app, concurrency=2)
    assert [r["state"] for r in jobs(conn, app.schema)] == ["completed"] * 12
    assert worker.claimed_ahead == 0 and worker.fetch_ahead.allowance() == 0


def test_allowance_needs_a_full_round_of_short_jobs() -> None:
    ahead = FetchAhead(concurrency=4, max_job_seconds=0.05)
    assert ahead.allowance() == 0, "a fresh worker has seen no job: no claiming ahead"
    for _ in range(3):
        ahead.observe(0.001)
    assert ahead.allowance() == 0, "fewer jobs than slots timed so far"
    ahead.observe(0.001)
    assert ahead.allowance() == 4
    for _ in range(200):
        ahead.observe(2.0)
    assert ahead.allowance() == 0, "long jobs close it again"


def test_short_jobs_drain_with_claims_ahead(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="quick")
    def quick(i: int) -> int:
        return i

    quick.delay_many([(i,) for i in range(300)])
    worker = drain(app, concurrency=3)
    rows = jobs(conn, app.schema)
    assert [r["state"] for r in rows] == ["completed"] * 300
    assert [r["result"] for r in rows] == list(range(300))
    assert all(r["attempt"] == 1 and r["errors"] == [] for r in rows)
    assert worker.claimed == 300
    assert worker.fetch_ahead.allowance() == 3
    assert worker.claimed_ahead > 0, "short jobs were claimed ahead of free slots"


def test_jobs_claimed_ahead_are_returned_unstarted_on_shutdown(app: App, conn: psycopg.Connection[Any]) -> None:
    release = threading.Event()
    started: list[str] = []

    @app.task(name="quick")
    def quick() -> None:
        started.append("quick")

    @app.task(name="block", priority=5)
    def block() -> None:
        started.append("block")
        release.wait(30)

    quick.delay_many([()] * 4)
    with worker_thread(app, concurrency=1, poll_interval=0.05, grace=30) as worker:
        wait_for(lambda: started.count("quick") == 4)
        assert worker.fetch_ahead.allowance() == 1
        block.delay()
        quick.delay()
        # `block` (higher priority) runs; the next quick job is claimed ahead into the local queue.
        wait_for(lambda: "block" in started and len(worker._ready) == 1)
        states = {r["task"]: r["state"] for r in jobs(conn, app.schema) if r["id"] > 4}
        assert states == {"block": "running", "quick": "running"}
        worker.request_stop()
        wait_for(lambda: [r["state"] for r in jobs(conn, app.schema) if r["id"] == 6] == ["available"])
        release.set()
    rows = {r["id"]: r for r in jobs(conn, app.schema)}
    assert rows[5]["state"] == "completed"
    returned = rows[6]
    assert returned["state"] == "available" and returned["attempt"] == 0 and returned["errors"] == []
    assert started.count("quick") == 4, "the job claimed ahead never ran"
