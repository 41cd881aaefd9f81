"""Pool exhaustion after start: a tiny PgBouncer transaction pool hogged mid-drain and during .delay().

docs/pgbouncer.md ("When the budget is exceeded"): the worker's fetch and outcome writes get
`PoolExhaustedError`, are retried with backoff and logged once per episode (`worker.fetch_failing
... query_wait_timeout`, `completer.failing`) and once on recovery; nothing is lost or doubled.
`.delay()` outside a transaction raises `PoolExhaustedError` after `query_wait_timeout`; the
statement never ran. tests/test_pgbouncer.py starts a worker into an already exhausted pool; here
the pool is exhausted while the worker is draining, with jobs running and outcomes to write.

A transaction pool only: its servers go back to the pool after each statement, so other clients can
take all of them mid-drain (in a session pool the worker's own connections keep their servers).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgtasks import App, ConnectionLostError, PoolExhaustedError
from tests.helpers import jobs, wait_for, worker_thread
from tests.pgbouncer_fixtures import PgBouncerLab

pytestmark = pytest.mark.pgbouncer

POOL_SIZE = 2
QUERY_WAIT_TIMEOUT_S = 1
CONCURRENCY = 4
BACKLOG = 12  # jobs waiting when the worker starts
# Generous bounds on a loaded 2-core machine, in units of the pooler's wait.
EPISODE_TIMEOUT_S = 30 * QUERY_WAIT_TIMEOUT_S
DRAIN_TIMEOUT_S = 60.0
HOG_APP = f"pgt-hog-{uuid.uuid4().hex[:8]}"


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The fields of every pgtasks log record of `event`."""
    return [r.__dict__["fields"] for r in caplog.records if getattr(r, "event", None) == event]


def pin_a_server(dsn: str) -> psycopg.Connection[Any]:
    """A client that holds one server connection of a transaction pool: its transaction stays open.

    The worker's statements are short, but on a loaded machine one may hold the last free server
    for a whole query_wait_timeout: then this client got the 08P01 itself and tries again.
    """
    deadline = time.monotonic() + EPISODE_TIMEOUT_S
    while True:
        hog = psycopg.connect(dsn, autocommit=True, application_name=HOG_APP)
        try:
            hog.execute("BEGIN")
            hog.execute("SELECT 1")
            return hog
        except psycopg.OperationalError:
            hog.close()
            if time.monotonic() > deadline:
                raise


@contextlib.contextmanager
def hogged(pgbouncer: PgBouncerLab, name: str) -> Iterator[None]:
    """Every server connection of pool `name` held by other clients until the block exits."""
    hogs: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(POOL_SIZE):
            hogs.append(pin_a_server(pgbouncer.instances[name].dsn))
        [pool] = [p for p in pgbouncer.admin(name, "SHOW POOLS") if p["database"] != "pgbouncer"]
        assert (pool["sv_active"], pool["sv_idle"]) == (POOL_SIZE, 0)  # exhausted: no server left
        yield
    finally:
        for hog in hogs:
            hog.close()


def jobs_done(conn: psycopg.Connection[Any], schema: str) -> int:
    return sum(1 for row in jobs(conn, schema) if row["state"] == "completed")


def expect_pool_exhausted(attempt: Any) -> PoolExhaustedError:
    """Run `attempt()`; it must raise PoolExhaustedError whose message says what happened and what to do."""
    with pytest.raises(PoolExhaustedError) as caught:
        attempt()
    error = caught.value
    assert isinstance(error, ConnectionLostError)  # documented as a ConnectionLostError (retryable)
    message = str(error)
    assert "query_wait_timeout" in message and "the statement never ran" in message
    assert "PgBouncer default_pool_size" in message and "docs/pgbouncer.md" in message
    cause = error.__cause__
    assert isinstance(cause, psycopg.OperationalError) and cause.sqlstate == "08P01"
    return error


def test_pool_hogged_mid_drain_and_during_delay_retries_raises_and_loses_nothing(
    pgbouncer: PgBouncerLab, app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    name = f"exhaust-{uuid.uuid4().hex[:6]}"
    tiny = pgbouncer.start(name, "transaction", pool_size=POOL_SIZE, query_wait_timeout=QUERY_WAIT_TIMEOUT_S)
    pooled = App(tiny.dsn, schema=app.schema, application_name=f"pgt-exhaust-{uuid.uuid4().hex[:8]}")
    runs: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    gate = threading.Event()  # the first jobs hold their slots until the pool is hogged

    @pooled.task(name="work")
    def work(i: int) -> None:
        with lock:
            runs[i] += 1
        gate.wait(DRAIN_TIMEOUT_S)

    @app.task(name="work")
    def enqueue_side(i: int) -> None: ...

    def running() -> int:
        with lock:
            return sum(runs.values())

    def delay_many_exhausted() -> None:
        work.delay_many([(-1,), (-2,)])

    def adelay_exhausted() -> None:
        asyncio.run(work.adelay(-3))

    enqueue_side.delay_many([(i,) for i in range(BACKLOG)])
    try:
        with worker_thread(pooled, concurrency=CONCURRENCY, pool_size=3, poll_interval=0.2) as worker:
            work.delay(BACKLOG)  # through the pooler, before the exhaustion: the App's pool is in use
            wait_for(lambda: running() == CONCURRENCY, timeout=DRAIN_TIMEOUT_S)  # mid-drain, slots full
            with hogged(pgbouncer, name):
                gate.set()  # the running jobs finish now: their outcomes and the next fetch need a server
                before = len(jobs(conn, app.schema))
                expect_pool_exhausted(lambda: work.delay(-1))
                expect_pool_exhausted(delay_many_exhausted)
                expect_pool_exhausted(adelay_exhausted)
                assert len(jobs(conn, app.schema)) == before  # none of the three inserted anything
                wait_for(lambda: bool(logged(caplog, "worker.fetch_failing"))
                         and bool(logged(caplog, "completer.failing")), timeout=EPISODE_TIMEOUT_S)
                assert running() == CONCURRENCY  # no job started while the pool was hogged
            after = work.delay(BACKLOG + 1)  # the first .delay() after the exhaustion works
            wait_for(lambda: jobs_done(conn, app.schema) == BACKLOG + 2, timeout=DRAIN_TIMEOUT_S)
            assert worker.claimed == BACKLOG + 2
    finally:
        gate.set()
        pooled.close()

    assert runs == {i: 1 for i in range(BACKLOG + 2)}  # every job enqueued ran exactly once
    rows = jobs(conn, app.schema)
    assert [(r["state"], r["attempt"], r["errors"]) for r in rows] == [("completed", 1, [])] * (BACKLOG + 2)
    assert rows[-1]["id"] == after.id
    [fetch_failing] = logged(caplog, "worker.fetch_failing")  # once per episode
    assert "query_wait_timeout" in fetch_failing["error"]
    [completer_failing] = logged(caplog, "completer.failing")
    assert "query_wait_timeout" in completer_failing["error"] and completer_failing["backlog"] >= 1
    assert [len(logged(caplog, "worker.fetch_recovered")), len(logged(caplog, "completer.recovered"))] == [1, 1]
    assert logged(caplog, "job.outcome_rejected") == []
    errors = [r.getMessage() for r in caplog.records if r.name.startswith("pgtasks") and r.levelno >= logging.ERROR]
    assert errors == []
