"""Test helpers: run a worker in a background thread, read job rows, wait for conditions."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgtasks import App, Worker


@contextmanager
def worker_thread(app: App, **options: Any) -> Iterator[Worker]:
    """Run app.worker(**options) on its own event loop in a thread; stop it gracefully on exit."""
    worker = app.worker(**options)
    errors: list[BaseException] = []
    started = threading.Event()

    def target() -> None:
        async def main() -> None:
            task = asyncio.create_task(worker.arun())
            waiter = asyncio.create_task(worker.started.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            started.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=target, name="test-worker", daemon=True)
    thread.start()
    assert started.wait(30), "worker did not start within 30s"
    if errors:
        raise errors[0]
    try:
        yield worker
    finally:
        worker.request_stop()
        thread.join(60)
        assert not thread.is_alive(), "worker did not stop within 60s"
        if errors:
            raise errors[0]


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
