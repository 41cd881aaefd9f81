"""Integration tests: the worker runs jobs against a real PostgreSQL and records every outcome."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest

import pgtasks
from pgtasks import App
from pgtasks.core.models import ErrorEntry, JobState, Outcome
from pgtasks.worker import worker as worker_module
from tests.helpers import drain, jobs, wait_for, worker_thread


class Order(msgspec.Struct):
    id: int
    placed: datetime


def test_sync_and_async_tasks_complete_with_typed_arguments(app: App, conn: psycopg.Connection[Any]) -> None:
    seen: list[Any] = []

    @app.task(name="ship")
    def ship(order: Order, note: str = "") -> int:
        seen.append(order)
        return order.id * 2

    @app.task(name="aship")
    async def aship(when: datetime) -> str:
        await asyncio.sleep(0)
        seen.append(when)
        return when.isoformat()

    placed = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    ship.delay(Order(21, placed))
    aship.delay(placed)
    worker = drain(app)
    assert worker.claimed == 2
    rows = jobs(conn, app.schema)
    assert [r["state"] for r in rows] == ["completed", "completed"]
    assert [r["result"] for r in rows] == [42, placed.isoformat()]
    assert all(r["attempt"] == 1 and r["finalized_at"] is not None for r in rows)
    assert Order(21, placed) in seen and placed in seen
    assert sorted(type(value).__name__ for value in seen) == ["Order", "datetime"]  # decoded, not dicts/strs


def test_failures_retry_with_error_entries_until_discarded(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="flaky", max_attempts=3, retry=pgtasks.Fixed(0))
    def flaky() -> None:
        raise ValueError("upstream said no")

    flaky.delay()
    drain(app)
    [row] = jobs(conn, app.schema)
    assert (row["state"], row["attempt"]) == ("discarded", 3)
    assert [e["attempt"] for e in row["errors"]] == [1, 2, 3]
    assert {e["type"] for e in row["errors"]} == {"ValueError"}
    assert all("upstream said no" in e["message"] and "Traceback" in e["traceback"] for e in row["errors"])


def test_retry_counts_an_attempt_and_waits(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="later")
    def later() -> None:
        raise pgtasks.Retry(in_=120, reason="rate limited")

    later.delay()
    drain(app)
    [row] = jobs(conn, app.schema)
    assert (row["state"], row["attempt"]) == ("retryable", 1)
    assert 115 <= (row["run_at"] - row["attempted_at"]).total_seconds() <= 125
    assert row["errors"][0]["type"] == "Retry" and row["errors"][0]["message"] == "rate limited"


def test_snooze_keeps_the_attempt_count(app: App, conn: psycopg.Connection[Any]) -> None:
    calls: list[int] = []

    @app.task(name="sleepy")
    def sleepy() -> None:
        calls.append(pgtasks.current_job().attempt)
        if len(calls) < 3:
            raise pgtasks.Snooze(0)

    sleepy.delay()
    drain(app)
    [row] = jobs(conn, app.schema)
    assert calls == [1, 1, 1]  # snoozes did not use up attempts
    assert (row["state"], row["attempt"], row["claims"], row["errors"]) == ("completed", 1, 3, [])

    @app.task(name="snooze_long")
    def snooze_long() -> None:
        raise pgtasks.Snooze(300)

    snooze_long.delay()
    drain(app)
    snoozed = jobs(conn, app.schema)[1]
    assert (snoozed["state"], snoozed["attempt"]) == ("scheduled", 0)
    assert (snoozed["run_at"] - snoozed["attempted_at"]).total_seconds() > 290


def test_cancel_stops_for_good(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="doomed")
    def doomed() -> None:
        raise pgtasks.Cancel("customer deleted")

    doomed.delay()
    drain(app)
    [row] = jobs(conn, app.schema)
    assert (row["state"], row["attempt"]) == ("cancelled", 1)
    assert row["errors"][0]["type"] == "Cancel" and row["errors"][0]["message"] == "customer deleted"


def test_timeouts_fail_the_attempt_for_async_and_sync_tasks(app: App, conn: psycopg.Connection[Any]) -> None:
    release = threading.Event()

    @app.task(name="slow_async", timeout=0.2, max_attempts=1)
    async def slow_async() -> None:
        await asyncio.sleep(30)

    @app.task(name="slow_sync", timeout=0.2, max_attempts=1)
    def slow_sync() -> None:
        release.wait(30)

    @app.task(name="quick")
    def quick() -> None: ...

    hooked: list[type[BaseException]] = []

    @app.on_error
    def record(event: pgtasks.JobEvent) -> None:
        assert event.error is not None
        hooked.append(type(event.error))

    slow_async.delay()
    slow_sync.delay()
    started = time.monotonic()
    worker = drain(app, concurrency=2)
    assert time.monotonic() - started < 10
    quick.delay()
    worker = drain(app, concurrency=2)
    release.set()
    rows = {r["task"]: r for r in jobs(conn, app.schema)}
    for name in ("slow_async", "slow_sync"):
        assert rows[name]["state"] == "discarded"
        assert rows[name]["errors"][0]["type"] == "TimeoutError"
        assert "timeout of 0.2s" in rows[name]["errors"][0]["message"]
    assert hooked == [pgtasks.JobTimeoutError] * 2  # a TimeoutError subclass with a name that says why
    assert rows["quick"]["state"] == "completed"
    assert worker.claimed == 1


def test_a_timeout_the_task_raises_itself_is_not_blamed_on_its_limit(
    app: App, conn: psycopg.Connection[Any]
) -> None:
    @app.task(name="own_timeout", timeout=30, max_attempts=1)
    async def own_timeout() -> None:
        raise TimeoutError("the payment API did not answer")

    own_timeout.delay()
    drain(app)
    [row] = jobs(conn, app.schema)
    [error] = row["errors"]
    assert (row["state"], error["type"], error["message"]) == (
        "discarded", "TimeoutError", "the payment API did not answer")
    assert "own_timeout" in error["traceback"]  # the task's own traceback is kept


def test_stuck_sync_thread_is_not_reused(app: App) -> None:
    release = threading.Event()
    threads_used: list[str] = []

    @app.task(name="stuck", timeout=0.1, max_attempts=1)
    def stuck() -> None:
        threads_used.append(threading.current_thread().name)
        release.wait(30)

    @app.task(name="after")
    def after() -> None:
        threads_used.append(threading.current_thread().name)

    with worker_thread(app, concurrency=1, poll_interval=0.05) as worker:
        stuck.delay()
        wait_for(lambda: len(threads_used) == 1)
        after.delay()
        wait_for(lambda: len(threads_used) == 2)
        assert threads_used[0] != threads_used[1]
        assert worker.threads.size == 2
        release.set()


def test_a_worker_claims_only_jobs_of_tasks_it_knows(app: App, conn: psycopg.Connection[Any]) -> None:
    """Two apps share a schema and a queue (or old and new code in a rolling deploy): each worker runs
    only its own tasks' jobs; the other app's job stays available, its attempts untouched, until a
    worker that knows it claims it."""
    other = App(app.dsn, schema=app.schema)

    @other.task(name="elsewhere.only")
    def only() -> str:
        return "ran elsewhere"

    only.delay()

    @app.task(name="known")
    def known() -> None: ...

    known.delay()
    drain(app)
    rows = {r["task"]: r for r in jobs(conn, app.schema)}
    assert rows["known"]["state"] == "completed"
    missing = rows["elsewhere.only"]
    assert (missing["state"], missing["attempt"], missing["errors"]) == ("available", 0, [])
    drain(other)
    finished = {r["task"]: r for r in jobs(conn, app.schema)}["elsewhere.only"]
    assert (finished["state"], finished["attempt"], finished["result"]) == ("completed", 1, "ran elsewhere")
    other.close()


def test_expired_jobs_are_not_run(app: App, conn: psycopg.Connection[Any]) -> None:
    ran: list[int] = []

    @app.task(name="stale")
    def stale() -> None:
        ran.append(1)

    stale.apply_async(expires=0.05)
    time.sleep(0.2)
    drain(app)
    [row] = jobs(conn, app.schema)
    assert ran == []
    assert row["state"] == "cancelled" and row["errors"][0]["type"] == "Expired"


def test_scheduled_jobs_wait_for_run_at_and_priority_orders(app: App, conn: psycopg.Connection[Any]) -> None:
    order: list[str] = []

    @app.task(name="record")
    def record(label: str) -> None:
        order.append(label)

    # An eta an hour out, made due on purpose below: no race with the clock on a loaded machine.
    scheduled = record.apply_async(args=("scheduled",), countdown=3600)
    record.apply_async(args=("low",), priority=-5)
    record.apply_async(args=("high",), priority=10)
    record.apply_async(args=("middle",))
    drain(app, concurrency=1)
    assert order == ["high", "middle", "low"]
    assert scheduled.state() == "scheduled"
    conn.execute(f'UPDATE "{app.schema}".jobs SET run_at = now() WHERE id = %s', [scheduled.id])
    drain(app, concurrency=1)
    assert order == ["high", "middle", "low", "scheduled"]
    row = next(r for r in jobs(conn, app.schema) if r["id"] == scheduled.id)
    assert row["attempted_at"] >= row["run_at"]


def test_listen_wakes_an_idle_worker_and_poll_is_the_safety_net(app: App, conn: psycopg.Connection[Any]) -> None:
    done = threading.Event()

    @app.task(name="ping")
    def ping() -> None:
        done.set()

    with worker_thread(app, poll_interval=60, listen=True):
        ping.delay()
        # A few seconds on a loaded machine, still far below the 60 s poll: only LISTEN can do it.
        assert done.wait(10), "LISTEN did not wake the worker within 10 s (its poll is 60 s)"
    done.clear()
    with worker_thread(app, poll_interval=0.2, listen=False):
        ping.delay()
        assert done.wait(5), "polling did not pick the job up"


def test_graceful_shutdown_finishes_short_jobs_and_puts_long_ones_back(
    app: App, conn: psycopg.Connection[Any]
) -> None:
    started = threading.Event()

    @app.task(name="short")
    async def short() -> None:
        started.set()
        await asyncio.sleep(0.3)

    @app.task(name="long")
    async def long() -> None:
        await asyncio.sleep(60)

    with worker_thread(app, grace=5, poll_interval=0.05):
        short.delay()
        assert started.wait(5)
    assert jobs(conn, app.schema)[0]["state"] == "completed"

    long.delay()
    with worker_thread(app, grace=0.3, poll_interval=0.05):
        wait_for(lambda: jobs(conn, app.schema)[1]["state"] == "running")
    row = jobs(conn, app.schema)[1]
    assert (row["state"], row["attempt"]) == ("available", 0)
    assert row["errors"][0]["type"] == "WorkerShutdown"


def test_shutdown_recancels_a_job_that_swallows_cancellation(app: App, conn: psycopg.Connection[Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "JOB_RECANCEL_AFTER", 0.3)  # 5 s by default
    swallowed = 0
    keep_swallowing = threading.Event()  # while set, the job swallows every cancel
    keep_swallowing.set()

    @app.task(name="stubborn")
    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                if not keep_swallowing.is_set():
                    raise
                swallowed += 1

    stubborn.delay()
    # It swallows every cancel: the stop cannot finish, and the error says where the worker waits.
    with (pytest.raises(RuntimeError, match=r"did not stop within 3s(.|\n)*pgtasks-job-"),
          worker_thread(app, grace=0.1, poll_interval=0.05, stop_timeout=3) as worker):
        wait_for(lambda: jobs(conn, app.schema)[0]["state"] == "running")
    wait_for(lambda: swallowed >= 3, timeout=10)  # cancelled again and again, not once and then waited on
    keep_swallowing.clear()
    wait_for(lambda: worker.loop is not None and worker.loop.is_closed(), timeout=10)
    [row] = jobs(conn, app.schema)
    assert (row["state"], row["attempt"]) == ("available", 0)
    assert row["errors"][0]["type"] == "WorkerShutdown"


def test_a_saturated_worker_waits_instead_of_spinning(app: App) -> None:
    release = threading.Event()
    started = threading.Event()

    @app.task(name="busy")
    async def busy() -> None:
        started.set()
        await asyncio.to_thread(release.wait, 30)

    busy.delay()
    with worker_thread(app, concurrency=1, poll_interval=0.05, listen=False) as worker:
        assert started.wait(10)
        before = worker.waits
        time.sleep(1.0)  # 20 poll intervals with the only slot busy
        during = worker.waits - before
        release.set()
    # Each wait is a wakeup or a poll; a loop that does not wait spins tens of thousands of times.
    assert during <= 5, f"the fetch loop went round {during} times in 1 s with no free slot"


def test_stale_claim_cannot_overwrite_the_new_outcome(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="fenced")
    def fenced() -> None: ...

    ref = fenced.delay()

    async def scenario() -> tuple[set[int], set[int]]:
        async with await app.aconnect() as aconn:
            [first] = await app.store.ajob_fetch_available(aconn, queues=["default"], limit=1, worker_id="old")
            # The first claimant goes silent; the job is put back and claimed again.
            await aconn.execute(f'UPDATE "{app.schema}".jobs SET state = \'available\' WHERE id = %s', [ref.id])
            [second] = await app.store.ajob_fetch_available(aconn, queues=["default"], limit=1, worker_id="new")
            assert (first.claims, second.claims) == (1, 2)
            new = await app.store.ajob_set_outcome_many(aconn, [Outcome(ref.id, 2, JobState.COMPLETED)])
            stale = await app.store.ajob_set_outcome_many(aconn, [Outcome(ref.id, 1, JobState.DISCARDED)])
            return new, stale

    new, stale = asyncio.run(scenario())
    assert (new, stale) == ({ref.id}, set())
    [row] = jobs(conn, app.schema)
    assert (row["state"], row["attempted_by"]) == ("completed", "new")


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"poll_interval": 0}, {"queues": []}, {"pool_size": 1}])
def test_bad_worker_settings_are_rejected(app: App, bad: dict[str, Any]) -> None:
    with pytest.raises(pgtasks.ConfigurationError):
        app.worker(**bad)


def test_several_queues_are_served_by_priority_not_by_name(app: App) -> None:
    order: list[str] = []

    @app.task(name="tagged")
    def tagged(label: str) -> None:
        order.append(label)

    tagged.configure(queue="a").delay("a-low")
    tagged.configure(queue="z", priority=3).delay("z-high")
    tagged.configure(queue="m", priority=1).delay("m-mid")
    tagged.configure(queue="ignored", priority=9).delay("not mine")
    drain(app, queues=["a", "m", "z"], concurrency=1)
    assert order == ["z-high", "m-mid", "a-low"]


def test_one_claimed_batch_of_sync_jobs_gives_each_job_its_own_outcome(
    app: App, conn: psycopg.Connection[Any],
) -> None:
    """Sync jobs claimed together share the pool's threads (one wakeup per burst, see
    worker/threads.py); each still runs on a thread of its own when it blocks, and gets its own
    timeout, cancel, soft limit, progress and outcome."""
    meet = threading.Barrier(2)  # two jobs of the batch that only finish if they run at the same time
    release = threading.Event()
    cancel_seen = threading.Event()

    @app.task(name="batch.ok")
    def ok(n: int) -> int:
        return n

    @app.task(name="batch.boom", max_attempts=1)
    def boom() -> None:
        raise ValueError("boom")

    @app.task(name="batch.stuck", max_attempts=1, timeout=0.5)
    def stuck() -> None:
        release.wait(20)

    @app.task(name="batch.cancel_me")
    def cancel_me() -> str:
        for _ in range(400):
            if pgtasks.current_job().cancelled:
                cancel_seen.set()
                return "stopped"
            time.sleep(0.05)
        return "never cancelled"

    @app.task(name="batch.soft", soft_timeout=0.2, timeout=20)
    def soft() -> str:
        for _ in range(400):
            if pgtasks.current_job().soft_timed_out:
                return "wrapped up"
            time.sleep(0.02)
        return "no soft limit"

    @app.task(name="batch.meet")
    def meet_other(side: str) -> str:
        meet.wait(20)
        return side

    @app.task(name="batch.progress")
    def report() -> str:
        pgtasks.current_job().set_progress(2, 4, message="half")
        return "reported"

    refs = {
        "ok1": ok.delay(1), "boom": boom.delay(), "stuck": stuck.delay(), "cancel_me": cancel_me.delay(),
        "soft": soft.delay(), "meet_a": meet_other.delay("a"), "ok2": ok.delay(2), "meet_b": meet_other.delay("b"),
        "progress": report.delay(),
    }
    try:
        with worker_thread(app, concurrency=len(refs), poll_interval=0.1) as worker:
            wait_for(lambda: refs["cancel_me"].id in worker.cancels, timeout=20)
            refs["cancel_me"].cancel()
            wait_for(lambda: all(r["finalized_at"] is not None for r in jobs(conn, app.schema)), timeout=30)
    finally:
        release.set()
    rows = {row["id"]: row for row in jobs(conn, app.schema)}
    got = {name: rows[ref.id] for name, ref in refs.items()}
    assert len({row["attempted_at"] for row in got.values()}) == 1  # one claim: now() of one statement
    assert {name: row["state"] for name, row in got.items()} == {
        "ok1": "completed", "ok2": "completed", "boom": "discarded", "stuck": "discarded", "cancel_me": "cancelled",
        "soft": "completed", "meet_a": "completed", "meet_b": "completed", "progress": "completed"}
    assert (got["ok1"]["result"], got["ok2"]["result"]) == (1, 2)
    assert got["boom"]["errors"][-1]["type"] == "ValueError"
    assert "exceeded its timeout of 0.5s" in got["stuck"]["errors"][-1]["message"]
    assert cancel_seen.is_set()
    assert got["soft"]["result"] == "wrapped up"
    assert (got["meet_a"]["result"], got["meet_b"]["result"]) == ("a", "b")
    progress = refs["progress"].progress()
    assert progress is not None and (progress.done, progress.total, progress.message) == (2, 4, "half")


def test_one_outcome_write_of_every_kind_lands_each_field(app: App, conn: psycopg.Connection[Any]) -> None:
    """The outcome arrays go as literals where no value needs quoting (storage/jobs.py): numbers,
    states, NULLs; the JSON ones as lists once one is set. Every kind in one batch, as written."""

    @app.task(name="kinds")
    def kinds() -> None: ...

    refs = [kinds.delay() for _ in range(5)]
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    error = ErrorEntry(1, at, "ValueError", 'said "no", {twice}\\ \n', traceback="tb")

    async def scenario() -> set[int]:
        async with await app.aconnect() as aconn:
            claimed = await app.store.ajob_fetch_available(aconn, queues=["default"], limit=5, worker_id="w")
            by_id = {job.id: job for job in claimed}
            ok, retried, snoozed, failed, later = (by_id[ref.id] for ref in refs)
            return await app.store.ajob_set_outcome_many(aconn, [
                Outcome.completed(ok, b'{"a": [1, "x,y"], "b": null}'),
                Outcome.retry(retried, 2.5, error),
                Outcome.snoozed(snoozed, 0.0),
                Outcome.discarded(failed, error),
                Outcome.retry(later, 1e-05, error),
            ])

    written = asyncio.run(scenario())
    assert written == {ref.id for ref in refs}
    rows = {row["id"]: row for row in jobs(conn, app.schema)}
    ok, retried, snoozed, failed, later = (rows[ref.id] for ref in refs)
    assert (ok["state"], ok["result"], ok["errors"]) == ("completed", {"a": [1, "x,y"], "b": None}, [])
    assert (retried["state"], retried["attempt"]) == ("retryable", 1)
    assert retried["errors"][0]["message"] == 'said "no", {twice}\\ \n' and retried["errors"][0]["traceback"] == "tb"
    assert (snoozed["state"], snoozed["attempt"], snoozed["errors"]) == ("scheduled", 0, [])
    assert (failed["state"], failed["finalized_at"] is not None) == ("discarded", True)
    assert retried["run_at"] - later["run_at"] == timedelta(seconds=2.5 - 1e-05)  # one statement's now()
