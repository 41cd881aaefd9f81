"""Prometheus metrics scraped over real HTTP during a drain, and the before_job / after_job / on_error hooks."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import threading
import urllib.request
from typing import Any

import psycopg
import pytest

import pgtasks
from pgtasks import App, JobEvent
from pgtasks.testing import drain, worker_thread
from tests.helpers import wait_for
from tests.requirements import require_module


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels are exactly `labels` (in any order)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part) if rest else {}
        if metric == name and {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return None


def settled(app: App) -> bool:
    """The drain's held state: every job but `slow` finished, `slow` running."""
    with psycopg.connect(app.dsn, autocommit=True) as db:
        rows = db.execute(f'SELECT task, state::text FROM "{app.schema}".jobs').fetchall()
    return collections.Counter(rows) == {("fast", "completed"): 5, ("flaky", "discarded"): 1,
                                         ("slow", "running"): 1}


def test_metrics_endpoint_scraped_during_a_drain(app: App) -> None:
    require_module("prometheus_client")
    slow_started, gate = threading.Event(), threading.Event()
    scrapes: list[str] = []
    scraper_errors: list[BaseException] = []

    @app.task(name="fast")
    def fast(n: int) -> int:
        return n

    @app.task(name="flaky", max_attempts=1)
    def flaky() -> None:
        raise ValueError("nope")

    @app.task(name="slow")
    def slow() -> None:
        slow_started.set()
        gate.wait(60)  # held until the scraper has seen the state below

    fast.delay_many([(i,) for i in range(5)])
    flaky.delay()
    slow.delay()
    worker_box: dict[str, pgtasks.Worker] = {}

    def scrape_the_held_state() -> None:
        # The queue gauges are read from the database once per QUEUE_STATS_TTL: the first scrape
        # happens only once the jobs table holds the state asserted below, so none is stale.
        wait_for(lambda: "worker" in worker_box and worker_box["worker"].metrics is not None, timeout=30)
        assert slow_started.wait(30), "slow never started"
        wait_for(lambda: settled(app), timeout=30, interval=0.05)
        metrics = worker_box["worker"].metrics
        assert metrics is not None
        port = metrics.port

        def counted_the_fast_jobs() -> bool:  # the job counters are the after_job hook's: it may lag
            scrapes.append(scrape(port))
            return sample(scrapes[-1], "pgtasks_jobs_total", task="fast", outcome="completed") == 5.0

        wait_for(counted_the_fast_jobs, timeout=30, interval=0.05)

    def scraper() -> None:
        try:
            scrape_the_held_state()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            scraper_errors.append(exc)
        finally:
            gate.set()

    original = app.worker

    def capture(**options: Any) -> pgtasks.Worker:
        worker = original(**options)
        worker_box["worker"] = worker
        return worker

    app.worker = capture  # type: ignore[method-assign]
    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        outcomes = drain(app, metrics_port=0, concurrency=4)
    finally:
        gate.set()
        thread.join(60)
        del app.worker
    if scraper_errors:
        raise scraper_errors[0]
    assert sorted(o.state for o in outcomes) == ["completed"] * 6 + ["discarded"]
    text = scrapes[-1]  # the scrape that counted the 5 fast jobs, taken while slow still ran
    assert sample(text, "pgtasks_jobs_total", task="flaky", outcome="discarded") == 1.0
    assert sample(text, "pgtasks_job_duration_seconds_count", task="fast") == 5.0
    assert sample(text, "pgtasks_jobs_running") == 1.0  # slow is still running
    # Queue gauges come from the database: slow running, nothing else unfinished, nothing due.
    queue_jobs = {state: sample(text, "pgtasks_queue_jobs", queue="default", state=state)
                  for state in ("available", "scheduled", "running", "retryable")}
    assert queue_jobs == {"available": 0.0, "scheduled": 0.0, "running": 1.0, "retryable": 0.0}
    assert sample(text, "pgtasks_queue_paused", queue="default") == 0.0
    assert sample(text, "pgtasks_queue_lag_seconds", queue="default") == 0.0  # no job waits to be claimed
    assert sample(text, "pgtasks_listener_connected") == 0.0  # drain() polls without LISTEN
    assert sample(text, "pgtasks_database_up") == 1.0
    assert sample(text, "pgtasks_leader") == 0.0  # a burst worker (drain) does not stand for election
    pool_size = float(worker_box["worker"].pool_size)
    assert sample(text, "pgtasks_pool_max_connections") == pool_size
    connections = sample(text, "pgtasks_pool_connections")
    assert connections is not None and 1.0 <= connections <= pool_size, connections
    assert app.hooks.after == []  # the metrics hook is removed when the worker stops


def test_hooks_see_each_attempt_and_share_extra(app: App, caplog: pytest.LogCaptureFixture) -> None:
    trace: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="-")
    calls: list[tuple[str, int, str | None]] = []
    seen_in_after: list[tuple[int, object, float | None]] = []  # the hook runner swallows asserts: record
    seen_in_task: list[str] = []

    @app.before_job
    def before(event: JobEvent) -> None:
        event.extra["span"] = f"span-{event.id}"
        trace.set(f"trace-{event.id}")
        calls.append(("before", event.id, None))

    @app.after_job
    async def after(event: JobEvent) -> None:
        await asyncio.sleep(0)
        seen_in_after.append((event.id, event.extra.get("span"), event.duration))
        calls.append(("after", event.id, event.state))

    @app.on_error
    def on_error(event: JobEvent) -> None:
        calls.append(("error", event.id, type(event.error).__name__))

    @app.after_job
    def broken(event: JobEvent) -> None:
        raise RuntimeError("hook bug")

    @app.task(name="good")
    def good() -> None:
        seen_in_task.append(trace.get())  # a sync task on a thread sees the context before_job set

    @app.task(name="bad", max_attempts=1)
    async def bad() -> None:
        seen_in_task.append(trace.get())
        raise KeyError("k")

    ok, ko = good.delay(), bad.delay()
    with caplog.at_level(logging.ERROR, logger="pgtasks.hooks"):
        outcomes = drain(app, concurrency=1)
    assert sorted(o.state for o in outcomes) == ["completed", "discarded"]  # a failing hook fails no job
    assert [c for c in calls if c[1] == ok.id] == [("before", ok.id, None), ("after", ok.id, "completed")]
    assert [c for c in calls if c[1] == ko.id] == [
        ("before", ko.id, None), ("error", ko.id, "KeyError"), ("after", ko.id, "discarded")]
    # after_job saw the extra before_job put there, and a duration.
    assert {job_id: span for job_id, span, _ in seen_in_after} == {ok.id: f"span-{ok.id}", ko.id: f"span-{ko.id}"}
    assert all(duration is not None and duration >= 0 for _, _, duration in seen_in_after), seen_in_after
    assert sorted(seen_in_task) == sorted([f"trace-{ok.id}", f"trace-{ko.id}"])
    failures = [r for r in caplog.records if getattr(r, "event", None) == "hook.failed"]
    assert len(failures) == 2 and failures[0].exc_info is not None


def test_metrics_show_leadership_of_a_long_running_worker(app: App) -> None:
    require_module("prometheus_client")
    with worker_thread(app, poll_interval=0.1, metrics_port=0, leader_ttl=2.0) as worker:
        metrics = worker.metrics
        assert metrics is not None
        wait_for(lambda: sample(scrape(metrics.port), "pgtasks_leader") == 1.0, timeout=15)
        text = scrape(metrics.port)
        assert worker.maintenance is not None and worker.maintenance.is_leader
        term = worker.maintenance.elector.term
        assert term is not None and term >= 1 and sample(text, "pgtasks_leader_term") == float(term)
        assert sample(text, "pgtasks_listener_connected") == 1.0
