"""Unique jobs: explicit unique_key and the task-level default, race-free under concurrent enqueues."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import pgtasks
from pgtasks import App, Unique
from pgtasks.testing import drain
from tests.helpers import jobs


def test_20_concurrent_enqueues_with_one_unique_key_make_one_job(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="report")
    def report(n: int) -> None: ...

    barrier = threading.Barrier(20)
    ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def enqueue(n: int) -> None:
        try:
            with app.connect() as own:  # 20 connections, so the inserts really race in the database
                barrier.wait(10)
                ref = report.apply_async(args=(n,), unique_key="daily-report", connection=own)
            with lock:
                ids.append(ref.id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    rows = jobs(conn, app.schema)
    assert len(rows) == 1 and rows[0]["unique_key"] == "daily-report"
    assert ids == [rows[0]["id"]] * 20


def test_20_concurrent_transactions_with_the_task_default_make_one_job(app: App, conn: psycopg.Connection[Any]) -> None:
    """Each enqueue inside its own open transaction: the losers wait for the winner's commit, then get its id."""

    @app.task(name="sync_user", unique=True)
    def sync_user(user_id: int) -> None: ...

    barrier = threading.Barrier(20)
    ids: list[int] = []
    lock = threading.Lock()

    def enqueue() -> None:
        with app.connect() as own, own.transaction():
            barrier.wait(10)
            ref = sync_user.apply_async(args=(7,), connection=own)
        with lock:
            ids.append(ref.id)

    threads = [threading.Thread(target=enqueue) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    rows = jobs(conn, app.schema)
    assert len(rows) == 1 and sorted(ids) == [rows[0]["id"]] * 20


def test_task_default_keys_by_arguments_with_defaults_filled(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="notify", unique=True)
    def notify(user: int, channel: str = "email") -> None: ...

    first = notify.delay(1)
    assert notify.delay(1, "email").id == first.id  # the default is part of the key
    assert notify.delay(user=1, channel="email").id == first.id
    other = notify.delay(1, "sms")
    assert other.id != first.id and notify.delay(2).id not in (first.id, other.id)
    assert len(jobs(conn, app.schema)) == 3
    explicit = notify.apply_async(args=(1,), unique_key="mine")  # an explicit key wins
    assert explicit.id not in (first.id, other.id)
    drain(app)  # finished jobs release their keys
    assert notify.delay(1).id != first.id


def test_unique_by_some_arguments_and_by_period(app: App) -> None:
    @app.task(name="refresh", unique=Unique(args=("account",)))
    def refresh(account: int, reason: str) -> None: ...

    assert refresh.delay(5, "login").id == refresh.delay(5, "webhook").id
    assert refresh.delay(6, "login").id != refresh.delay(5, "login").id

    spec = Unique(args=False, period=timedelta(hours=1))
    assert spec.key("t", {"a": 1}, now=3600.0) == spec.key("t", {"a": 2}, now=7199.0)
    assert spec.key("t", {"a": 1}, now=3600.0) != spec.key("t", {"a": 1}, now=7200.0)
    assert spec.key("t", {}, now=3600.0).endswith("@1970-01-01T01:00:00+00:00")

    @app.task(name="hourly", unique=Unique(period=3600))
    def hourly(x: int) -> None: ...

    assert hourly.delay(1).id == hourly.delay(1).id


def test_unique_is_validated_at_registration(app: App) -> None:
    with pytest.raises(pgtasks.ConfigurationError, match="not parameters"):
        @app.task(name="bad1", unique=Unique(args=("nope",)))
        def bad1(x: int) -> None: ...
    with pytest.raises(pgtasks.ConfigurationError, match="sequence of parameter names"):
        Unique(args="x")
    with pytest.raises(pgtasks.ConfigurationError, match="positive"):
        Unique(period=0)
    with pytest.raises(pgtasks.ConfigurationError, match="unique="):
        app.task(name="bad2", unique="yes")  # type: ignore[call-overload]


class _CompletesHolderAfterInsert(psycopg.Connection[Any]):
    """A real connection that, right after the unique insert was skipped, lets another session finish the
    holder: the window between the skipped insert and the holder lookup, made to happen on purpose."""

    on_insert: Any = None

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        cur = super().execute(query, params, **kwargs)
        if self.on_insert is not None and "ON CONFLICT" in str(query):
            hook, self.on_insert = self.on_insert, None
            hook()
        return cur


def test_enqueue_when_the_holder_finishes_between_insert_and_lookup(app: App, conn: psycopg.Connection[Any],
                                                                    database_url: str) -> None:
    @app.task(name="once")
    def once() -> None: ...

    holder = once.apply_async(unique_key="k")

    def finish_holder() -> None:
        conn.execute(f'UPDATE "{app.schema}".jobs SET state = \'completed\' WHERE id = %s', [holder.id])

    with _CompletesHolderAfterInsert.connect(database_url, autocommit=True) as racing:
        racing.on_insert = finish_holder
        fresh = once.apply_async(unique_key="k", connection=racing)
    assert fresh.id != holder.id
    assert [(r["id"], r["state"]) for r in jobs(conn, app.schema)] == [(holder.id, "completed"),
                                                                        (fresh.id, "available")]
