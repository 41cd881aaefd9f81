"""The dashboard's live feed against a real PostgreSQL and real PgBouncer pools: push by LISTEN where
it works (direct, session pool, a direct listen_dsn), polling behind a transaction pool, one change-mark
poll per interval however many subscribers, and the overview computed once per refresh interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from pgtasks import App
from pgtasks.dashboard import asgi_app
from pgtasks.dashboard.asgi import Dashboard
from pgtasks.dashboard.live import DEBOUNCE, LiveFeed
from pgtasks.testing import worker_thread
from tests.helpers import drain, wait_for
from tests.pgbouncer_fixtures import PgBouncerLab

PUSH_BOUND_S = 2.0  # the bound for a finished job to reach an open page
# So long that no poll runs during a test: a change that arrives came by NOTIFY.
NO_POLL_S = 60.0


def board(dashboard: ASGIApp) -> Dashboard:
    value: Dashboard = dashboard.dashboard  # type: ignore[attr-defined]
    return value


def sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """Server-sent events as (event, data) from a stream's lines; comments (keep-alives) skipped."""
    event, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


class Reads:
    """The feed's change-mark reader: the real query through the App's pool, counted and timed."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, Any]:
        with self.app.database.pool().connection() as conn:
            mark = self.app.store.dashboard_change_mark(conn)
        with self._lock:
            self.times.append(time.monotonic())
        return mark

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.times)

    async def beyond(self, count: int, timeout: float = 10.0) -> None:
        """Wait until more than `count` reads have been made."""
        deadline = time.monotonic() + timeout
        while self.count <= count:
            assert time.monotonic() < deadline, f"the feed made no read beyond {count} within {timeout}s"
            await asyncio.sleep(0.01)


def quick_task(app: App) -> Any:
    @app.task(name="quick")
    def quick(n: int = 0) -> int:
        return n

    return quick


def finalized_at(conn: psycopg.Connection[Any], schema: str, job_id: int) -> float | None:
    row = conn.execute(f'SELECT finalized_at FROM "{schema}".jobs WHERE id = %s', (job_id,)).fetchone()
    return row[0].timestamp() if row and row[0] is not None else None


def first_change_after_finishing(events: Iterator[tuple[str, str]], conn: psycopg.Connection[Any], schema: str,
                                 job_id: int) -> tuple[list[str], float, float]:
    """The topics of the first change event read once job `job_id` had finished, when it arrived
    (wall clock, as the database's finalized_at), and when the job finished."""
    for kind, data in events:
        arrived = time.time()
        done = finalized_at(conn, schema, job_id)
        if kind == "change" and done is not None:
            topics: list[str] = json.loads(data)
            return topics, arrived, done
    raise AssertionError("the event stream ended")


# -- push: the event stream, direct ----------------------------------------------------------------------


def test_a_job_completed_by_a_worker_reaches_the_event_stream_within_2s(app: App,
                                                                        conn: psycopg.Connection[Any]) -> None:
    quick = quick_task(app)
    dashboard = asgi_app(app, refresh_interval=NO_POLL_S)
    with TestClient(dashboard) as client, client.stream("GET", "/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        events = sse(response.iter_lines())
        assert next(events) == ("hello", json.dumps("live: pushed by LISTEN/NOTIFY"))
        feed = board(dashboard).feed
        assert feed.mode == "push" and "LISTEN/NOTIFY works" in feed.reason
        # The page says so too.
        assert "live: pushed by LISTEN/NOTIFY" in client.get("/jobs").text

        ref = quick.delay(1)
        kind, data = next(events)  # the insert's NOTIFY
        assert kind == "change" and "jobs" in json.loads(data)

        worker = threading.Thread(target=drain, args=(app,), kwargs={"listen": False})
        worker.start()
        try:
            # The first change that comes once the job has finished (a worker's start may send others).
            topics, arrived, done = first_change_after_finishing(events, conn, app.schema, ref.id)
        finally:
            worker.join(30)
        assert "jobs" in topics
        latency = arrived - done
        assert 0 <= latency < PUSH_BOUND_S, f"the finished job reached the stream {latency:.3f}s after it finished"


# -- the feed through PgBouncer ------------------------------------------------------------------------


async def next_change(queue: asyncio.Queue[frozenset[str]], timeout: float) -> tuple[frozenset[str], float]:
    started = time.monotonic()
    topics = await asyncio.wait_for(queue.get(), timeout)
    return topics, time.monotonic() - started


async def quiet(queue: asyncio.Queue[frozenset[str]], reads: Reads) -> None:
    """Let the feed read the mark twice more (so it has seen everything so far), then drop what it sent."""
    await reads.beyond(reads.count + 1)
    await asyncio.sleep(DEBOUNCE * 1.5)  # a change the last read found is sent after the debounce
    while not queue.empty():
        queue.get_nowait()


@pytest.mark.pgbouncer
def test_behind_the_transaction_pool_the_feed_polls_and_still_delivers(pgbouncer: PgBouncerLab, app: App) -> None:
    interval = 0.5
    pooled = App(pgbouncer.instances["transaction"].dsn, schema=app.schema, application_name=_name())
    release = threading.Event()

    @pooled.task(name="gated")
    def gated() -> None:
        release.wait(30)

    reads = Reads(pooled)

    async def main() -> None:
        feed = LiveFeed(pooled.database, pooled.store, refresh_interval=interval, mark_reader=reads)
        try:
            queue = await feed.subscribe()
            assert feed.mode == "poll"
            assert "transaction pooling detected" in feed.reason
            assert feed.describe() == f"live: polled every 0.5 s ({feed.reason})"
            await reads.beyond(0)  # the first mark is what later ones are compared with

            ref = await asyncio.to_thread(gated.delay)
            topics, waited = await next_change(queue, interval + 1.0)
            assert "jobs" in topics and waited <= interval + 1.0

            with worker_thread(pooled, poll_interval=0.05, listen=False):
                await asyncio.to_thread(wait_for, lambda: pooled.get_job(ref.id)["state"] == "running")  # type: ignore[index]
                await quiet(queue, reads)
                release.set()
                finished = time.monotonic()
                topics, _ = await next_change(queue, interval + 1.0 + 1.0)
                # The worker writes the outcome within a few ms of the task's return; allow it a second.
                assert "jobs" in topics and time.monotonic() - finished <= interval + 1.0 + 1.0
                assert pooled.get_job(ref.id)["state"] == "completed"  # type: ignore[index]
        finally:
            release.set()
            await feed.aclose()

    try:
        asyncio.run(main())
    finally:
        pooled.close()


def _name() -> str:
    # Unique per test, so counting this feed's connections in pg_stat_activity sees no one else's.
    return f"dash-{uuid.uuid4().hex[:8]}"


async def push_delivers(app: App, task: Any) -> tuple[LiveFeed, frozenset[str], float]:
    """Start a feed on `app` that never polls in time, enqueue a job, and time its change event."""
    feed = LiveFeed(app.database, app.store, refresh_interval=NO_POLL_S)
    queue = await feed.subscribe()
    try:
        await asyncio.to_thread(task.delay)
        topics, waited = await next_change(queue, PUSH_BOUND_S)
        return feed, topics, waited
    finally:
        await feed.aclose()


@pytest.mark.pgbouncer
@pytest.mark.parametrize("how", ["session pool", "transaction pool with a direct listen_dsn"])
def test_push_through_a_session_pool_or_a_direct_listen_dsn(pgbouncer: PgBouncerLab, app: App,
                                                           database_url: str, how: str) -> None:
    if how == "session pool":
        pooled = App(pgbouncer.instances["session"].dsn, schema=app.schema, application_name=_name())
    else:
        pooled = App(pgbouncer.instances["transaction"].dsn, schema=app.schema, listen_dsn=database_url,
                     application_name=_name())
    try:
        feed, topics, waited = asyncio.run(push_delivers(pooled, quick_task(pooled)))
        assert feed.mode == "push", feed.reason
        assert "LISTEN/NOTIFY works on " + ("the database URL (session)" if how == "session pool"
                                            else "--listen-dsn (direct)") in feed.reason
        assert "jobs" in topics and waited < PUSH_BOUND_S
    finally:
        pooled.close()


# -- cost: one poll per interval for any number of subscribers, one overview per interval --------------


def listeners(conn: psycopg.Connection[Any], application_name: str) -> int:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                       (f"{application_name}-dashboard-listener",)).fetchone()
    assert row is not None
    return int(row[0])


def test_five_subscribers_share_one_poll_per_interval_and_one_listen_connection(
        database_url: str, app: App, conn: psycopg.Connection[Any]) -> None:
    interval = 0.2
    named = App(database_url, schema=app.schema, application_name=_name())
    reads = Reads(named)
    dashboard = asgi_app(named, refresh_interval=interval)
    board(dashboard).feed = LiveFeed(named.database, named.store, refresh_interval=interval, mark_reader=reads)
    try:
        with TestClient(dashboard) as client, contextlib.ExitStack() as streams:
            for _ in range(5):
                response = streams.enter_context(client.stream("GET", "/events"))
                assert next(sse(response.iter_lines()))[0] == "hello"
            start = reads.count
            wait_for(lambda: reads.count >= start + 6, timeout=10)
            times = reads.times[start:]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            # Five pollers would read in bursts of five; one reads once per interval.
            assert min(gaps) >= interval * 0.8, gaps
            elapsed = times[-1] - times[0]
            assert len(times) <= elapsed / interval + 2, (len(times), elapsed)
            # One LISTEN connection for the process, however many streams are open.
            assert board(dashboard).feed.mode == "push"
            assert listeners(conn, named.application_name) == 1
    finally:
        named.close()


def test_the_overview_is_computed_once_per_refresh_interval(app: App) -> None:
    dashboard = asgi_app(app, refresh_interval=NO_POLL_S)
    cache = board(dashboard).cache
    with TestClient(dashboard) as client:
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: client.get("/").status_code, range(16)))
        assert codes == [200] * 16
        for _ in range(5):
            assert client.get("/").status_code == 200
        # Three parts, each once: the hour chart, the day chart, and counts, durations, leader, workers.
        assert cache.computed == 3
        # An action clears it: the next page shows the change.
        page = client.get("/queues")
        token = page.cookies.get("pgtasks_csrf") or client.cookies.get("pgtasks_csrf")
        assert client.post("/queues/pause", data={"csrf": token, "queue": "default"}).status_code == 200
        client.get("/")
        assert cache.computed == 6

    interval = 0.5
    dashboard = asgi_app(app, refresh_interval=interval)
    cache = board(dashboard).cache
    with TestClient(dashboard) as client:
        first = time.monotonic()  # before the computation, whose end starts the interval
        client.get("/")
        assert cache.computed == 3
        requests = 0

        def recomputed() -> bool:
            nonlocal requests
            requests += 1
            return client.get("/").status_code == 200 and cache.computed >= 5

        # The hour chart and the live part expire with the interval (each a few ms apart, as they
        # were computed); the day chart lasts a minute.
        wait_for(recomputed, timeout=10, interval=0.02)
        assert time.monotonic() - first >= interval
        assert requests > 2  # the requests within the interval were served from the cache
        assert cache.computed == 5
