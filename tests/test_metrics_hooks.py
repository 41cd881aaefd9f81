"""Prometheus metrics scraped over real HTTP during a drain, and the before_job / after_job / on_error hooks."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import urllib.request
from typing import Any

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


def test_metrics_endpoint_scraped_during_a_drain(app: App) -> None:
    require_module("prometheus_client")
    gate = threading.Event()
    scrapes: list[str] = []

    @app.task(name="fast")
    def fast(n: int) -> int:
        return n

    @app.task(name="flaky", max_attempts=1)
    def flaky() -> None:
        raise ValueError("nope")

    @app.task(name="slow")
    def slow() -> None:
        gate.wait(10)

    fast.delay_many([(i,) for i in range(5)])
    flaky.delay()
    slow.delay()
    worker_box: dict[str, Any] = {}

    def scraper() -> None:
        deadline = time.monotonic() + 15
        while "worker" not in worker_box or worker_box["worker"].ops.metrics is None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        metrics = worker_box["worker"].ops.metrics
        while time.monotonic() < deadline:  # scrape until the fast jobs are counted, while slow still runs
            text = scrape(metrics.port)
            if sample(text, "pgtasks_jobs_total", task="fast", outcome="completed") == 5.0:
                scrapes.append(text)
                break
            time.sleep(0.02)
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
        thread.join(20)
        del app.worker
    assert sorted(o.state for o in outcomes) == ["completed"] * 6 + ["discarded"]
    assert scrapes, "the endpoint never showed the 5 completed jobs"
    text = scrapes[0]
    assert sample(text, "pgtasks_jobs_total", task="flaky", outcome="discarded") == 1.0
    assert sample(text, "pgtasks_job_duration_seconds_count", task="fast") == 5.0
    assert sample(text, "pgtasks_jobs_running") == 1.0  # slow is still running
    # Queue gauges come from the database, cached for a few seconds between scrapes.
    assert sample(text, "pgtasks_queue_jobs", queue="default", state="running") is not None
    assert sample(text, "pgtasks_queue_paused", queue="default") == 0.0
    assert sample(text, "pgtasks_queue_lag_seconds", queue="default") is not None
    assert sample(text, "pgtasks_listener_connected") == 0.0  # drain() polls without LISTEN
    assert sample(text, "pgtasks_database_up") == 1.0
    assert sample(text, "pgtasks_leader") == 0.0  # a burst worker (drain) does not stand for election
    assert sample(text, "pgtasks_pool_max_connections") is not None
    assert sample(text, "pgtasks_pool_connections") is not None
    assert app.hooks.after == []  # the metrics hook is removed when the worker stops


def test_hooks_see_each_attempt_and_share_extra(app: App, caplog: pytest.LogCaptureFixture) -> None:
    trace: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="-")
    calls: list[tuple[str, int, str | None]] = []
    seen_in_task: list[str] = []

    @app.before_job
    def before(event: JobEvent) -> None:
        event.extra["span"] = f"span-{event.id}"
        trace.set(f"trace-{event.id}")
        calls.append(("before", event.id, None))

    @app.after_job
    async def after(event: JobEvent) -> None:
        await asyncio.sleep(0)
        assert event.extra["span"] == f"span-{event.id}" and event.duration is not None
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
    assert ("before", ok.id, None) in calls and ("after", ok.id, "completed") in calls
    assert ("error", ko.id, "KeyError") in calls and ("after", ko.id, "discarded") in calls
    assert calls.index(("before", ko.id, None)) < calls.index(("error", ko.id, "KeyError")) < calls.index(
        ("after", ko.id, "discarded"))
    assert sorted(seen_in_task) == sorted([f"trace-{ok.id}", f"trace-{ko.id}"])
    failures = [r for r in caplog.records if getattr(r, "event", None) == "hook.failed"]
    assert len(failures) == 2 and failures[0].exc_info is not None


def test_metrics_show_leadership_of_a_long_running_worker(app: App) -> None:
    require_module("prometheus_client")
    with worker_thread(app, poll_interval=0.1, metrics_port=0, leader_ttl=2.0) as worker:
        metrics = worker.ops.metrics
        assert metrics is not None
        wait_for(lambda: sample(scrape(metrics.port), "pgtasks_leader") == 1.0, timeout=15)
        text = scrape(metrics.port)
        assert (sample(text, "pgtasks_leader_term") or 0) >= 1
        assert sample(text, "pgtasks_listener_connected") == 1.0
