"""Retries that do what the task says (retry_on / dont_retry_on, Retry keeping the original error),
hooks that see arguments and results, on_retry, per-task handlers, soft timeouts and the worker's
lifecycle hooks: each through a real worker on a real database (docs/tasks.md, docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest

import pgtasks
from pgtasks import App, JobEvent, WorkerEvent
from pgtasks.core.context import JobContext
from pgtasks.testing import drain, eager, worker_thread
from pgtasks.worker.soft_timeout import SoftLimit, SoftLimited
from tests.conftest import ROOT
from tests.helpers import jobs, logged

# -- retry_on / dont_retry_on ------------------------------------------------------------------------


def connect() -> None:
    raise ConnectionRefusedError("the database refused the connection")


def test_an_exception_not_in_retry_on_discards_at_once(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="sync_crm", retry_on=(ConnectionError,), max_attempts=4, retry=pgtasks.Fixed(0))
    def sync_crm(kind: str) -> None:
        if kind == "network":
            connect()
        raise ValueError(f"bad record {kind}")

    bad, flaky = sync_crm.delay("42"), sync_crm.delay("network")
    outcomes = drain(app, concurrency=1)
    rows = {r["id"]: r for r in jobs(conn, app.schema)}
    # Not retried: discarded on its first attempt of 4, its error recorded with the traceback.
    assert (rows[bad.id]["state"], rows[bad.id]["attempt"]) == ("discarded", 1)
    [error] = rows[bad.id]["errors"]
    assert (error["attempt"], error["type"], error["message"]) == (1, "ValueError", "bad record 42")
    assert "sync_crm" in error["traceback"]
    # ConnectionRefusedError is a ConnectionError: retried until the attempts are used up.
    assert (rows[flaky.id]["state"], rows[flaky.id]["attempt"]) == ("discarded", 4)
    assert [e["type"] for e in rows[flaky.id]["errors"]] == ["ConnectionRefusedError"] * 4
    assert [o.state for o in outcomes if o.id == flaky.id] == ["retryable"] * 3 + ["discarded"]
    with pytest.raises(pgtasks.JobDiscardedError) as failed:
        bad.wait(timeout=10)
    assert failed.value.error_type == "ValueError"


def test_dont_retry_on_wins_over_retry_on_and_the_default_retries_everything(
        app: App, conn: psycopg.Connection[Any]) -> None:
    later = pgtasks.Fixed(3600)  # a retried job stays `retryable` after its first attempt

    @app.task(name="read_file", retry_on=(OSError,), dont_retry_on=(FileNotFoundError,), retry=later)
    def read_file(error: str) -> None:
        raise {"missing": FileNotFoundError, "denied": PermissionError}[error](error)

    @app.task(name="never", retry_on=(), retry=later)  # only an explicit Retry retries
    def never(explicit: bool) -> None:
        if explicit:
            raise pgtasks.Retry()
        raise ConnectionError("would have been retried by default")

    @app.task(name="default", retry=later)  # no retry_on: every exception is retried
    def default() -> None:
        raise ValueError("retried by default")

    refs = {"missing": read_file.delay("missing"), "denied": read_file.delay("denied"),
            "never": never.delay(False), "explicit": never.delay(True), "default": default.delay()}
    drain(app)
    rows = {r["id"]: r for r in jobs(conn, app.schema)}
    states = {name: (rows[ref.id]["state"], rows[ref.id]["attempt"]) for name, ref in refs.items()}
    assert states == {"missing": ("discarded", 1), "denied": ("retryable", 1), "never": ("discarded", 1),
                      "explicit": ("retryable", 1), "default": ("retryable", 1)}


def test_a_hard_timeout_is_a_timeout_error_for_retry_on(app: App, conn: psycopg.Connection[Any]) -> None:
    later = pgtasks.Fixed(3600)

    @app.task(name="slow_net", timeout=0.2, retry_on=(ConnectionError,), retry=later)
    async def slow_net() -> None:
        await asyncio.sleep(60)

    @app.task(name="slow_any", timeout=0.2, retry_on=(TimeoutError,), retry=later)
    async def slow_any() -> None:
        await asyncio.sleep(60)

    net, any_ = slow_net.delay(), slow_any.delay()
    drain(app, concurrency=2)
    rows = {r["id"]: r for r in jobs(conn, app.schema)}
    assert (rows[net.id]["state"], rows[net.id]["errors"][0]["type"]) == ("discarded", "TimeoutError")
    assert (rows[any_.id]["state"], rows[any_.id]["errors"][0]["type"]) == ("retryable", "TimeoutError")


@pytest.mark.parametrize(("options", "names"), [
    ({"retry_on": "ValueError"}, ["retry_on='ValueError'", "exception class"]),
    ({"retry_on": (ValueError, 3)}, ["retry_on=", "3 is not an exception class"]),
    ({"dont_retry_on": (pgtasks.Retry,)}, ["dont_retry_on=", "Retry steers the job itself"]),
    ({"retry_on": KeyboardInterrupt}, ["retry_on=", "KeyboardInterrupt"]),
    ({"soft_timeout": 30, "timeout": 30}, ["soft_timeout=30", "less than timeout=30"]),
    ({"soft_timeout": 0}, ["soft_timeout=0", "positive number"]),
    ({"soft_timeout": True}, ["soft_timeout=True", "positive number"]),
    ({"on_failure": "alert"}, ["on_failure='alert'", "function taking a pgtasks.JobEvent"]),
])
def test_bad_retry_and_handler_options_fail_at_decoration(app: App, options: dict[str, Any],
                                                          names: list[str]) -> None:
    with pytest.raises(pgtasks.ConfigurationError) as refused:
        app.task(name="t", **options)
    assert all(name in str(refused.value) for name in names), str(refused.value)


# -- Retry keeps the original error ----------------------------------------------------------------


def test_retry_records_the_exception_it_is_for(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="fetch", max_attempts=3)
    def fetch(how: str) -> None:
        try:
            connect()
        except ConnectionError as err:
            if how == "exc":
                raise pgtasks.Retry(in_=3600, exc=err) from None  # exc= wins, whatever the chain says
            if how == "from":
                raise pgtasks.Retry(in_=timedelta(minutes=10)) from err
            if how == "context":  # the exception being handled, as Python chains it
                raise pgtasks.Retry(in_=3600)  # noqa: B904 - the implicit chain is what this case tests
            raise pgtasks.Retry(in_=3600, reason="plain retry") from None

    @app.task(name="fetch_last", max_attempts=1)
    def fetch_last() -> None:
        try:
            connect()
        except ConnectionError as err:
            raise pgtasks.Retry(exc=err) from err

    refs = {how: fetch.delay(how) for how in ("exc", "from", "context", "none")}
    last = fetch_last.delay()
    drain(app)
    rows = {r["id"]: r for r in jobs(conn, app.schema)}
    for how in ("exc", "from", "context"):
        row = rows[refs[how].id]
        [error] = row["errors"]
        assert (row["state"], error["type"], error["message"]) == (
            "retryable", "ConnectionRefusedError", "the database refused the connection"), how
        assert "in connect" in error["traceback"] and "ConnectionRefusedError" in error["traceback"], how
    waited = {how: (rows[refs[how].id]["run_at"] - rows[refs[how].id]["attempted_at"]).total_seconds()
              for how in ("exc", "from")}
    assert 3000 < waited["exc"] < 4000 and 500 < waited["from"] < 700, waited  # in_ as seconds and timedelta
    [plain] = rows[refs["none"].id]["errors"]  # `from None`, no exc=: nothing to record but the Retry
    assert (plain["type"], plain["message"], plain["traceback"]) == ("Retry", "plain retry", None)
    # Out of attempts, the job is discarded with the original error, and wait() says which.
    assert rows[last.id]["state"] == "discarded"
    assert rows[last.id]["errors"][0]["type"] == "ConnectionRefusedError"
    with pytest.raises(pgtasks.JobDiscardedError) as failed:
        last.wait(timeout=10)
    assert (failed.value.error_type, failed.value.error_message) == (
        "ConnectionRefusedError", "the database refused the connection")


@pytest.mark.parametrize("value", [-1, "30", float("nan"), True])
def test_retry_refuses_a_delay_it_cannot_use(value: Any) -> None:
    with pytest.raises(pgtasks.ConfigurationError, match=r"Retry\(in_="):
        pgtasks.Retry(in_=value)
    with pytest.raises(pgtasks.ConfigurationError, match=r"Retry\(exc='boom'\)"):
        pgtasks.Retry(exc="boom")  # type: ignore[arg-type]


def test_eager_mode_records_the_retry_error_as_the_worker_does(app: App) -> None:
    @app.task(name="eager_fetch")
    def eager_fetch() -> None:
        try:
            connect()
        except ConnectionError as err:
            raise pgtasks.Retry(in_=5) from err

    with eager(app, propagate=False) as refs:
        eager_fetch.delay()
    [ref] = refs
    assert (ref.outcome, ref.error_type, ref.error_message) == (
        "retryable", "ConnectionRefusedError", "the database refused the connection")


# -- hooks and handlers -------------------------------------------------------------------------------


class Order(msgspec.Struct, frozen=True):
    sku: str
    quantity: int


def test_hooks_and_handlers_see_arguments_results_and_retries(app: App, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[Any, ...]] = []  # the hook runner logs a failed assert instead of raising: record

    def on(kind: str) -> Any:
        def hook(event: JobEvent) -> None:
            error = None if event.error is None else f"{type(event.error).__name__}: {event.error}"
            seen.append((kind, event.task, event.attempt, event.args, event.kwargs, event.result, error,
                         event.state, event.retry_in is not None))
        return hook

    app.before_job(on("before"))
    app.on_error(on("error"))
    app.on_retry(on("retry"))
    app.after_job(on("after"))

    async def task_failure(event: JobEvent) -> None:  # async handlers are awaited
        await asyncio.sleep(0)
        on("task.failure")(event)

    @app.task(name="place", on_success=on("task.success"))
    def place(order: Order, when: datetime, *, note: str = "") -> dict[str, int]:
        return {order.sku: order.quantity}

    @app.task(name="total")
    async def total(*amounts: int) -> int:
        return sum(amounts)

    calls: list[int] = []

    @app.task(name="charge", max_attempts=3, retry=pgtasks.Fixed(0), on_retry=on("task.retry"),
              on_failure=task_failure, on_success=on("task.success"))
    def charge(amount: int) -> None:
        calls.append(amount)
        if len(calls) == 1:
            try:
                connect()
            except ConnectionError as err:
                raise pgtasks.Retry(in_=0, exc=err) from err
        raise ValueError(f"card declined for {amount}")

    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    place.delay(Order("apple", 3), when, note="gift")
    total.delay(1, 2, 3)
    charge.delay(70)
    with caplog.at_level(logging.ERROR, logger="pgtasks.hooks"):
        drain(app, concurrency=1)

    placed = [s for s in seen if s[1] == "place"]
    args = {"order": Order("apple", 3), "when": when, "note": "gift"}  # decoded to the annotated types
    assert placed == [
        ("before", "place", 1, (), args, None, None, None, False),
        ("task.success", "place", 1, (), args, {"apple": 3}, None, "completed", False),
        ("after", "place", 1, (), args, {"apple": 3}, None, "completed", False),
    ]
    assert isinstance(placed[0][4]["when"], datetime)
    assert [s[:6] for s in seen if s[1] == "total"] == [("before", "total", 1, (1, 2, 3), {}, None),
                                                       ("after", "total", 1, (1, 2, 3), {}, 6)]
    refused = "ConnectionRefusedError: the database refused the connection"
    declined = "ValueError: card declined for 70"
    kw = {"amount": 70}
    assert [s for s in seen if s[1] == "charge"] == [
        # Attempt 1 raises Retry(exc=): on_retry (the App's, then the task's) with the original
        # error; no on_error, which is for exceptions the task did not turn into a retry.
        ("before", "charge", 1, (), kw, None, None, None, False),
        ("retry", "charge", 1, (), kw, None, refused, "retryable", True),
        ("task.retry", "charge", 1, (), kw, None, refused, "retryable", True),
        ("after", "charge", 1, (), kw, None, refused, "retryable", True),
        # Attempt 2 fails and is retried: on_error, then on_retry.
        ("before", "charge", 2, (), kw, None, None, None, False),
        ("error", "charge", 2, (), kw, None, declined, None, False),
        ("retry", "charge", 2, (), kw, None, declined, "retryable", True),
        ("task.retry", "charge", 2, (), kw, None, declined, "retryable", True),
        ("after", "charge", 2, (), kw, None, declined, "retryable", True),
        # Attempt 3 is the last: on_error, then the task's on_failure; no on_retry.
        ("before", "charge", 3, (), kw, None, None, None, False),
        ("error", "charge", 3, (), kw, None, declined, None, False),
        ("task.failure", "charge", 3, (), kw, None, declined, "discarded", False),
        ("after", "charge", 3, (), kw, None, declined, "discarded", False),
    ]
    assert calls == [70, 70, 70]
    assert logged(caplog.records, "hook.failed") == []


def test_a_failing_task_handler_is_logged_and_the_job_goes_on(app: App, conn: psycopg.Connection[Any],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: JobEvent) -> None:
        raise RuntimeError("handler bug")

    @app.task(name="ok", on_success=broken)
    def ok() -> int:
        return 1

    ref = ok.delay()
    with caplog.at_level(logging.ERROR, logger="pgtasks.hooks"):
        drain(app)
    assert ref.wait(timeout=10) == 1
    [failure] = logged(caplog.records, "hook.failed")
    assert (failure["kind"], failure["job_id"], failure["error"]) == ("ok.on_success", ref.id,
                                                                      "RuntimeError: handler bug")


# -- soft timeouts --------------------------------------------------------------------------------------


def test_soft_timeout_raises_inside_an_async_task(app: App, conn: psycopg.Connection[Any],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="soft_caught", soft_timeout=0.2, timeout=60)
    async def soft_caught() -> str:
        try:
            await asyncio.sleep(60)
        except pgtasks.SoftTimeLimitExceeded as exc:
            await asyncio.sleep(0.01)  # the task may still await while it cleans up
            return f"cleaned up: {exc} flag={pgtasks.current_job().soft_timed_out}"
        return "slept"

    @app.task(name="soft_uncaught", soft_timeout=0.2, max_attempts=1)
    async def soft_uncaught() -> None:
        await asyncio.sleep(60)

    @app.task(name="soft_then_hard", soft_timeout=0.2, timeout=1.0, max_attempts=1)
    async def soft_then_hard() -> None:
        try:
            await asyncio.sleep(60)
        except pgtasks.SoftTimeLimitExceeded:
            await asyncio.sleep(60)  # ignores the warning: the hard timeout ends it, as always

    caught, uncaught, hard = soft_caught.delay(), soft_uncaught.delay(), soft_then_hard.delay()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="pgtasks.worker"):
        drain(app, concurrency=3)
    assert time.monotonic() - started < 50  # none of them slept its 60 s
    assert caught.wait(timeout=10) == ("cleaned up: task exceeded its soft timeout of 0.2s "
                                       "(its hard timeout is 60s) flag=True")
    rows = {r["id"]: r for r in jobs(conn, app.schema)}
    [error] = rows[uncaught.id]["errors"]
    assert (rows[uncaught.id]["state"], error["type"]) == ("discarded", "SoftTimeLimitExceeded")
    assert error["message"] == "task exceeded its soft timeout of 0.2s"
    assert "soft_uncaught" in error["traceback"]  # raised at the task's own await
    [error] = rows[hard.id]["errors"]
    assert (rows[hard.id]["state"], error["type"], error["message"]) == (
        "discarded", "TimeoutError", "task exceeded its timeout of 1.0s")
    warned = {f["job_id"] for f in logged(caplog.records, "job.soft_timeout")}
    assert warned == {caught.id, uncaught.id, hard.id}


def test_soft_timeout_sets_a_flag_a_sync_task_polls(app: App, conn: psycopg.Connection[Any]) -> None:
    release = threading.Event()

    @app.task(name="sync_soft", soft_timeout=0.2, timeout=60)
    def sync_soft(items: int) -> str:
        job = pgtasks.current_job()
        deadline = time.monotonic() + 50
        done = 0
        while done < items and time.monotonic() < deadline:
            if job.soft_timed_out:
                return "stopped early"
            done += 1
            time.sleep(0.01)
        return "finished"

    @app.task(name="sync_ignores", soft_timeout=0.2, timeout=1.0, max_attempts=1)
    def sync_ignores() -> None:
        release.wait(60)  # never looks at the flag: the hard timeout fails it, as always

    polled, ignored = sync_soft.delay(1_000_000), sync_ignores.delay()
    try:
        drain(app, concurrency=2)
    finally:
        release.set()
    assert polled.wait(timeout=10) == "stopped early"
    row = next(r for r in jobs(conn, app.schema) if r["id"] == ignored.id)
    assert (row["state"], row["errors"][0]["type"]) == ("discarded", "TimeoutError")


def test_a_soft_timeout_that_does_not_fire_leaves_nothing_behind(app: App, conn: psycopg.Connection[Any]) -> None:
    flags: list[bool] = []

    @app.task(name="quick", soft_timeout=0.05)
    async def quick(n: int) -> int:
        flags.append(pgtasks.current_job().soft_timed_out)
        return n

    @app.after_job
    async def linger(event: JobEvent) -> None:
        # Past the soft timeout, in the job's own asyncio task: a timer left armed would cancel it
        # here, and the job's outcome would never be written.
        await asyncio.sleep(0.2)

    refs = [quick.delay(n) for n in range(3)]
    outcomes = drain(app, concurrency=1)
    assert [o.state for o in outcomes] == ["completed"] * 3
    assert [ref.wait(timeout=10) for ref in refs] == [0, 1, 2]
    assert flags == [False] * 3


def soft_limited_task(limit_seconds: float) -> tuple[SoftLimit, list[str], Any]:
    """A coroutine run under a SoftLimit (its timer far away, fired by hand), and what it saw."""
    context = JobContext(1, "t", "default", 1, 1, datetime.now(UTC), "w")
    limit = SoftLimit(limit_seconds, context, hard=None, on_expired=lambda: None)
    seen: list[str] = []

    async def body() -> str:
        for _ in range(2):
            try:
                await asyncio.Event().wait()
            except pgtasks.SoftTimeLimitExceeded:
                seen.append("soft")
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
        return "done"

    async def job() -> str:
        return str(await SoftLimited(body(), limit))

    return limit, seen, job


def test_a_cancel_that_arrives_with_the_soft_timeout_is_not_lost() -> None:
    async def scenario() -> None:
        limit, seen, job = soft_limited_task(3600)
        task = asyncio.create_task(job())
        await asyncio.sleep(0)  # the coroutine waits in its first await
        # The soft timer and a shutdown cancel in the same loop iteration: asyncio folds them into
        # one CancelledError. The shutdown must win, or the worker would wait on a job it stopped.
        limit.expire()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(30):  # a lost cancel would leave the task waiting for ever
                await task
        assert seen == ["cancelled"] and limit.context.soft_timed_out

        limit, seen, job = soft_limited_task(3600)
        task = asyncio.create_task(job())
        await asyncio.sleep(0)
        limit.expire()  # alone: the task sees the soft exception, and the cancel request is withdrawn
        await asyncio.sleep(0)
        assert seen == ["soft"] and task.cancelling() == 0
        task.cancel()  # a later cancel (the hard timeout, a shutdown) gets through as usual
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(30):
                await task
        assert seen == ["soft", "cancelled"]

    asyncio.run(scenario())


# -- worker lifecycle hooks ---------------------------------------------------------------------------


def test_worker_hooks_run_once_each_around_the_jobs(app: App) -> None:
    order: list[str] = []
    events: list[WorkerEvent] = []

    @app.worker_ready
    def ready(event: WorkerEvent) -> None:
        events.append(event)
        order.append("ready")

    @app.worker_ready
    async def ready_async(event: WorkerEvent) -> None:
        await asyncio.sleep(0)
        order.append("ready_async")

    @app.worker_shutdown
    async def shutdown(event: WorkerEvent) -> None:
        await asyncio.sleep(0)
        events.append(event)
        order.append("shutdown")

    @app.task(name="work")
    def work(n: int) -> None:
        order.append(f"job {n}")

    for n in range(3):
        work.delay(n)
    with worker_thread(app, queues=["default", "other"], concurrency=1, poll_interval=0.1) as worker:
        deadline = time.monotonic() + 30
        while order.count("job 2") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert order == ["ready", "ready_async", "job 0", "job 1", "job 2", "shutdown"]
    assert events[0] is events[1]  # one event per worker, the same object for both
    assert events[0] == WorkerEvent(worker.worker_id, ("default", "other"), 1)


def test_a_failing_worker_ready_hook_stops_the_worker_before_any_claim(
        app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture) -> None:
    order: list[str] = []

    @app.worker_ready
    def connect_cache(event: WorkerEvent) -> None:
        raise ConnectionError("cache unreachable")

    @app.worker_shutdown
    def close_cache(event: WorkerEvent) -> None:
        order.append("shutdown")

    @app.worker_shutdown
    def broken(event: WorkerEvent) -> None:
        raise RuntimeError("teardown bug")

    @app.worker_shutdown
    def after_broken(event: WorkerEvent) -> None:
        order.append("after_broken")

    @app.task(name="needs_cache")
    def needs_cache() -> None:
        order.append("job")

    needs_cache.delay()
    worker = app.worker(poll_interval=0.1)
    with caplog.at_level(logging.ERROR, logger="pgtasks.hooks"), pytest.raises(ConnectionError,
                                                                                match="cache unreachable"):
        asyncio.run(worker.arun())
    assert order == ["shutdown", "after_broken"]  # teardown ran, past the hook that failed
    [row] = jobs(conn, app.schema)
    assert (row["state"], row["attempt"], worker.claimed) == ("available", 0, 0)  # nothing was claimed
    failures = logged(caplog.records, "hook.failed")
    assert [(f["kind"], f["hook"].rsplit(".", 1)[-1], f["error"]) for f in failures] == [
        ("worker_ready", "connect_cache", "ConnectionError: cache unreachable"),
        ("worker_shutdown", "broken", "RuntimeError: teardown bug")]


def test_worker_hooks_run_in_the_pgtasks_worker_process(app: App, env: dict[str, str]) -> None:
    @app.task(name="lifecycle.use")
    def use() -> str:
        return "enqueued from the test process"

    ref = use.delay()
    done = subprocess.run(
        [sys.executable, "-m", "pgtasks", "--app", "tests.apps.lifecycle_app:app", "worker", "--burst",
         "--queues", "default", "--concurrency", "2", "--poll-interval", "0.1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("lifecycle:")]
    pids = {line.split("pid=")[1].split()[0] for line in lines}
    assert len(pids) == 1 and str(os.getpid()) not in pids, lines  # all in the one worker process
    assert [line.split()[1] for line in lines] == ["ready", "task", "shutdown"], lines
    assert "queues=default concurrency=2" in lines[0]
    assert "client=client-of-" in lines[1]  # the task saw what the ready hook set up
    assert ref.wait(timeout=10).startswith("client-of-")
