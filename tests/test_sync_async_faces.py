"""The sync and the async face of each enqueue and wait API behave the same.

Both faces run one operation (pgtasks.storage.steps, the wait loop in pgtasks.client.results);
these tests run the same scenario through each face on its own schema and compare what they
returned and what they left in the table.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from pgtasks import App, JobDiscardedError, JobRef, Unique, WaitTimeoutError
from pgtasks.storage.jobs import COPY_MIN_ROWS
from tests.helpers import drain, jobs


@dataclass
class Face:
    """One face of the API, as plain calls: the async face runs each call on a fresh event loop."""

    name: str
    delay: Callable[..., JobRef]
    apply_async: Callable[..., JobRef]
    delay_many: Callable[..., list[JobRef]]
    wait: Callable[..., Any]


def sync_face() -> Face:
    return Face("sync", lambda task, *a: task.delay(*a), lambda task, **o: task.apply_async(**o),
                lambda task, calls: task.delay_many(calls), lambda ref, **o: ref.wait(**o))


def async_face() -> Face:
    def run(coro: Any) -> Any:
        return asyncio.run(coro)

    return Face("async", lambda task, *a: run(task.adelay(*a)), lambda task, **o: run(task.aapply_async(**o)),
                lambda task, calls: run(task.adelay_many(calls)), lambda ref, **o: run(ref.await_result(**o)))


@pytest.fixture
def fresh_app(database_url: str) -> Iterator[Callable[[], App]]:
    """Apps on schemas of their own, so each face starts from an empty table."""
    made: list[App] = []

    def make() -> App:
        application = App(database_url, schema=f"pgt_{uuid.uuid4().hex[:12]}")
        application.migrate()
        made.append(application)
        return application

    yield make
    with psycopg.connect(database_url, autocommit=True) as conn:
        for application in made:
            application.close()
            conn.execute(f'DROP SCHEMA IF EXISTS "{application.schema}" CASCADE')


def scenario(app: App, face: Face) -> dict[str, Any]:
    """Single, unique, bulk (JSON and COPY) enqueues, then waits for a result, a failure and a timeout."""

    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="fail", max_attempts=1)
    def fail() -> None:
        raise ValueError("no")

    @app.task(name="once", unique=Unique(args=("key",)))
    def once(key: str, n: int) -> int:
        return n

    seen: dict[str, Any] = {}
    first = face.delay(add, 1, 2)
    holder = face.delay(once, "k", 1)
    again = face.delay(once, "k", 2)
    seen["unique_returns_holder"] = again.id == holder.id
    later = face.apply_async(add, args=(5, 5), countdown=3600, priority=3)
    small = face.delay_many(add, [(i, i) for i in range(3)])
    mixed = face.delay_many(once, [once.s("k", 3), once.s("other", 4)])
    seen["bulk_unique"] = [ref.id == holder.id for ref in mixed]
    big = face.delay_many(add, [(i, 0) for i in range(COPY_MIN_ROWS)])
    seen["copy_ids_ascend"] = [r.id for r in big] == sorted(r.id for r in big)
    failed = face.delay(fail)
    drain(app)
    seen["result"] = face.wait(first, timeout=10)
    try:
        face.wait(failed, timeout=10)
    except JobDiscardedError as exc:
        seen["failure"] = (type(exc).__name__, exc.error_type, exc.error_message, exc.state)
    try:
        face.wait(later, timeout=0.2, poll_interval=0.05)
    except WaitTimeoutError as exc:
        seen["timeout"] = str(exc).replace(str(later.id), "<id>")
    seen["small_results"] = [face.wait(ref, timeout=10) for ref in small]
    with app.connect() as conn:
        seen["rows"] = sorted((r["task"], r["state"], r["priority"], r["unique_key"] is not None, r["attempt"])
                              for r in jobs(conn, app.schema))
    return seen


def test_the_sync_and_the_async_face_do_the_same(fresh_app: Callable[[], App]) -> None:
    sync_seen = scenario(fresh_app(), sync_face())
    async_seen = scenario(fresh_app(), async_face())
    assert sync_seen == async_seen
    # And what they do is what the docs say, so the comparison is not of two equal mistakes.
    assert sync_seen["unique_returns_holder"] is True
    assert sync_seen["bulk_unique"] == [True, False]
    assert sync_seen["copy_ids_ascend"] is True
    assert sync_seen["result"] == 3
    assert sync_seen["failure"] == ("JobDiscardedError[ValueError]", "ValueError", "no", "discarded")
    assert "did not finish within 0.2s" in sync_seen["timeout"]
    assert sync_seen["small_results"] == [0, 2, 4]
    states = {(task, state) for task, state, *_ in sync_seen["rows"]}
    assert states == {("add", "completed"), ("add", "scheduled"), ("fail", "discarded"), ("once", "completed")}
