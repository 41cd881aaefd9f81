"""Claiming ahead of free slots (worker/prefetch.py): only while jobs are short, and never lost."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from pgtasks import App, Worker
from pgtasks.worker import prefetch
from pgtasks.worker import worker as worker_module
from pgtasks.worker.prefetch import FetchAhead
from tests.helpers import drain, jobs, wait_for, worker_thread

# How long no-op jobs may take, as the worker times them, and still count as short here. On a
# loaded machine a thread hand-off alone can take longer than the production bound (50 ms), and
# the claim-ahead these tests need would then (rightly) not happen.
LOADED_MACHINE_WAIT = 2.0  # below STALL_S, so that a stall still closes the allowance
# The stall guard, widened so that a starved test thread still sees the jobs waiting locally.
STALL_S = 3.0


def claims_ahead_on_a_loaded_machine(worker: Worker) -> None:
    worker.fetch_ahead.max_local_wait = LOADED_MACHINE_WAIT


def test_allowance_is_sized_so_a_job_waits_about_max_local_wait() -> None:
    ahead = FetchAhead(concurrency=4, max_local_wait=0.05)
    assert ahead.allowance() == 0, "a fresh worker has seen no job: no claiming ahead"
    for _ in range(3):
        ahead.observe(0.01)
    assert ahead.allowance() == 0, "fewer jobs than slots timed so far"
    ahead.observe(0.01)
    assert ahead.allowance() == 20, "4 slots finishing a 10 ms job each: 20 jobs wait ~50 ms"
    for _ in range(200):
        ahead.observe(0.0001)
    assert ahead.allowance() == 4 * prefetch.MAX_AHEAD_PER_SLOT, "capped per slot"
    for _ in range(200):
        ahead.observe(0.2)
    assert ahead.allowance() == 0, "jobs longer than the wait bound close it"
    short = FetchAhead(concurrency=2)
    for _ in range(5):
        short.observe(0.001)
    assert short.allowance() > 0
    short.stalled(0.6)
    assert short.allowance() == 0, "a stall closes it until short jobs are seen again"


def test_long_jobs_are_never_claimed_ahead(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="slowish")
    def slowish() -> None:
        threading.Event().wait(0.08)

    slowish.delay_many([()] * 12)
    worker = drain(app, concurrency=2)
    assert [r["state"] for r in jobs(conn, app.schema)] == ["completed"] * 12
    assert worker.claimed_ahead == 0 and worker.fetch_ahead.allowance() == 0


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
    assert worker.fetch_ahead.allowance() >= 3
    assert worker.claimed_ahead > 0, "short jobs were claimed ahead of free slots"


def test_claim_ahead_can_be_turned_off(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="quick")
    def quick(i: int) -> int:
        return i

    quick.delay_many([(i,) for i in range(100)])
    worker = drain(app, concurrency=3, claim_ahead=False)
    assert [r["state"] for r in jobs(conn, app.schema)] == ["completed"] * 100
    assert worker.fetch_ahead.allowance() == 0
    assert worker.claimed_ahead == 0


def _short_then_blocking(app: App) -> tuple[Any, Any, threading.Event, list[str]]:
    release = threading.Event()
    started: list[str] = []

    @app.task(name="quick")
    def quick() -> None:
        started.append("quick")

    @app.task(name="block", priority=5)
    def block() -> None:
        started.append("block")
        release.wait(30)

    return quick, block, release, started


def test_jobs_claimed_ahead_are_returned_unstarted_on_shutdown(app: App, conn: psycopg.Connection[Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "STALL_SECONDS", STALL_S)  # the stop comes first, not the stall guard
    quick, block, release, started = _short_then_blocking(app)
    quick.delay_many([()] * 4)
    with worker_thread(app, concurrency=1, poll_interval=0.05, grace=30) as worker:
        claims_ahead_on_a_loaded_machine(worker)
        wait_for(lambda: started.count("quick") == 4)
        assert worker.fetch_ahead.allowance() >= 1
        block.delay()
        quick.delay_many([()] * 3)
        # `block` (higher priority) runs; the quick jobs are claimed ahead into the local queue.
        wait_for(lambda: "block" in started and len(worker._ready) == 3, interval=0.001)
        worker.request_stop()  # well before the stall guard would give them back
        wait_for(lambda: [r["state"] for r in jobs(conn, app.schema) if r["id"] > 5] == ["available"] * 3)
        release.set()
    rows = {r["id"]: r for r in jobs(conn, app.schema)}
    assert rows[5]["state"] == "completed"
    for job_id in (6, 7, 8):
        assert rows[job_id]["state"] == "available" and rows[job_id]["attempt"] == 0
        assert rows[job_id]["errors"] == []
    assert started.count("quick") == 4, "the jobs claimed ahead never ran"


def test_jobs_claimed_ahead_go_back_when_the_slots_stall(app: App, conn: psycopg.Connection[Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "STALL_SECONDS", STALL_S)
    quick, block, release, started = _short_then_blocking(app)
    quick.delay_many([()] * 4)
    with worker_thread(app, concurrency=1, poll_interval=1, grace=30) as worker:
        claims_ahead_on_a_loaded_machine(worker)
        wait_for(lambda: started.count("quick") == 4)
        block.delay()
        quick.delay_many([()] * 3)
        wait_for(lambda: "block" in started and len(worker._ready) == 3, interval=0.001)
        # No slot frees up: after STALL_SECONDS they are given back while `block` still runs.
        wait_for(lambda: [r["state"] for r in jobs(conn, app.schema) if r["id"] > 5] == ["available"] * 3,
                 timeout=STALL_S + 10)
        assert not worker._ready and worker.fetch_ahead.allowance() == 0
        assert started.count("quick") == 4 and "block" in started
        release.set()
        wait_for(lambda: started.count("quick") == 7, timeout=15)
    rows = jobs(conn, app.schema)
    assert [r["state"] for r in rows] == ["completed"] * 8
    assert [r["attempt"] for r in rows] == [1] * 8, "giving back did not use an attempt"
