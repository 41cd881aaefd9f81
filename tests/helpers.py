"""Test helpers: run a worker (in a thread, or until drained), read job rows, wait for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from pgtasks import App, Worker
from pgtasks.storage.connections import make_async_pool
from pgtasks.testing import worker_thread

__all__ = ["drain", "jobs", "run_with_pool", "wait_for", "worker_thread"]


T = TypeVar("T")


def run_with_pool(app: App, body: Callable[[Any], Awaitable[T]]) -> T:
    """Run `body(pool)` on a fresh event loop with a small pgtasks-style async pool."""

    async def main() -> T:
        pool = make_async_pool(app.dsn, application_name="test", max_size=2, name="test")
        await pool.open(wait=True)
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def drain(app: App, **options: Any) -> Worker:
    """Run a burst worker until no job is ready; returns it for its counters."""
    options.setdefault("poll_interval", 0.05)
    worker = app.worker(burst=True, **options)
    asyncio.run(worker.arun())
    return worker


def jobs(conn: psycopg.Connection[Any], schema: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f'SELECT *, state::text AS state FROM "{schema}".jobs ORDER BY id')
        return cur.fetchall()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll `condition` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def is_leader(worker: Worker) -> bool:
    return worker.maintenance is not None and worker.maintenance.is_leader


@contextlib.contextmanager
def leader_and_follower(app: App, **options: Any) -> Iterator[tuple[Worker, Worker]]:
    """Two worker threads of `app`: the first started and elected before the second starts."""
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(worker_thread(app, **options))
        wait_for(lambda: is_leader(first), timeout=10)
        second = stack.enter_context(worker_thread(app, **options))
        assert second.maintenance is not None
        yield first, second


def logged(records: list[logging.LogRecord], event: str) -> list[dict[str, Any]]:
    """The fields of each pgtasks `event` in `records` (caplog.records), in the order they were logged."""
    return [dict(r.__dict__["fields"]) for r in records if getattr(r, "event", None) == event]
