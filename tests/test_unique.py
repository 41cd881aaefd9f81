"""Unique jobs: explicit unique_key and the task-level default, race-free under concurrent enqueues.

Every enqueue face (.delay, .adelay, delay_many, adelay_many, enqueue_many, aenqueue_many) is raced
20 ways against a holder in each state that keeps the key (docs/operations.md: available,
scheduled, running, retryable) and against no holder at all; and each face is run with a holder
that finishes between the skipped insert and the holder lookup.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgtasks
from pgtasks import App, Unique
from pgtasks.client.task import JobRef, Task
from pgtasks.core.models import ErrorEntry, JobState, Outcome
from pgtasks.core.options import EnqueueOptions
from pgtasks.storage.jobs import UNIQUE_INSERT_ATTEMPTS
from pgtasks.testing import drain
from tests.helpers import jobs

CALLERS = 20
CONTESTED = 7  # the argument every caller enqueues: one unique key for all of them
FRESH = 1000  # caller n also enqueues FRESH + n in its bulk calls, a key of its own


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


# -- every face, every holder state, 20 callers at once ----------------------------------------------

UniqueTask = Task[[int], None]
SyncCall = Callable[[App, UniqueTask, int], list[JobRef]]
AsyncCall = Callable[[App, UniqueTask, int], Awaitable[list[JobRef]]]


@dataclass(frozen=True)
class Face:
    """One way to enqueue: caller n enqueues CONTESTED, and in bulk calls FRESH + n before it."""

    name: str
    call: SyncCall | None = None
    acall: AsyncCall | None = None
    bulk: bool = False

    def expected_args(self, n: int) -> list[int]:
        return [FRESH + n, CONTESTED] if self.bulk else [CONTESTED]


async def _adelay(app: App, task: UniqueTask, n: int) -> list[JobRef]:
    return [await task.adelay(CONTESTED)]


async def _adelay_many(app: App, task: UniqueTask, n: int) -> list[JobRef]:
    return await task.adelay_many([(FRESH + n,), (CONTESTED,)])


async def _aenqueue_many(app: App, task: UniqueTask, n: int) -> list[JobRef]:
    return await app.aenqueue_many([task.s(FRESH + n), task.s(CONTESTED)])


FACES = [
    Face("delay", call=lambda app, task, n: [task.delay(CONTESTED)]),
    Face("delay_many", call=lambda app, task, n: task.delay_many([(FRESH + n,), (CONTESTED,)]), bulk=True),
    Face("enqueue_many", call=lambda app, task, n: app.enqueue_many([task.s(FRESH + n), task.s(CONTESTED)]),
         bulk=True),
    Face("adelay", acall=_adelay),
    Face("adelay_many", acall=_adelay_many, bulk=True),
    Face("aenqueue_many", acall=_aenqueue_many, bulk=True),
]


def race_sync(app: App, task: UniqueTask, face: Face) -> dict[int, list[int]]:
    """CALLERS threads, each on its own connection, released together; caller n -> its job ids."""
    assert face.call is not None
    call = face.call
    barrier = threading.Barrier(CALLERS)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def enqueue(n: int) -> None:
        try:
            with app.connect() as own, app.bind(own):
                barrier.wait(30)
                ids = [ref.id for ref in call(app, task, n)]
            with lock:
                results[n] = ids
        except BaseException as exc:  # noqa: BLE001 - asserted on below
            with lock:
                errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    return results


def race_async(app: App, task: UniqueTask, face: Face) -> dict[int, list[int]]:
    """CALLERS coroutines, each on its own AsyncConnection, released together by an asyncio.Barrier."""
    assert face.acall is not None
    acall = face.acall

    async def main() -> dict[int, list[int]]:
        barrier = asyncio.Barrier(CALLERS)
        connections = [await app.aconnect() for _ in range(CALLERS)]
        try:
            async def enqueue(n: int) -> list[int]:
                with app.bind(connections[n]):
                    async with asyncio.timeout(30):
                        await barrier.wait()
                    return [ref.id for ref in await acall(app, task, n)]

            ids = await asyncio.gather(*(enqueue(n) for n in range(CALLERS)))
        finally:
            for connection in connections:
                await connection.close()
        return dict(enumerate(ids))

    return asyncio.run(main())


async def _claim(app: App, holder: JobRef) -> Outcome:
    """Claim the holder with the worker's own fetch query; returns a retry outcome for that claim."""
    async with await app.aconnect() as aconn:
        [claimed] = await app.store.ajob_fetch_available(aconn, queues=["default"], limit=1, worker_id="holder")
    assert claimed.id == holder.id
    error = ErrorEntry(claimed.attempt, datetime.now(UTC), "ValueError", "holder failed, retried in an hour")
    return Outcome(claimed.id, claimed.claims, JobState.RETRYABLE, retry_in=3600.0, error=error)


async def _claim_and_fail(app: App, holder: JobRef) -> None:
    """Claim the holder and record a failed attempt with the worker's own outcome query."""
    outcome = await _claim(app, holder)
    async with await app.aconnect() as aconn:
        assert await app.store.ajob_set_outcome_many(aconn, [outcome]) == {holder.id}



def app_of(task: Task[Any, Any]) -> App:
    assert isinstance(task.app, App)
    return task.app


def make_holder(state: str, task: UniqueTask) -> JobRef | None:
    """A live job holding CONTESTED's key in `state`, made the way pgtasks itself gets it there."""
    if state == "none":
        return None
    if state == "scheduled":
        return task.apply_async(args=(CONTESTED,), countdown=3600)
    holder = task.delay(CONTESTED)
    if state == "running":
        asyncio.run(_claim(app_of(task), holder))
    elif state == "retryable":
        asyncio.run(_claim_and_fail(app_of(task), holder))
    return holder


def ids_by_arg(conn: psycopg.Connection[Any], schema: str) -> dict[int, list[tuple[int, str]]]:
    """Each enqueued argument -> the (id, state) of every job row with it."""
    found: dict[int, list[tuple[int, str]]] = {}
    for row in jobs(conn, schema):
        found.setdefault(row["args"]["user_id"], []).append((row["id"], row["state"]))
    return found


@pytest.mark.parametrize("state", ["none", "available", "scheduled", "running", "retryable"])
@pytest.mark.parametrize("face", FACES, ids=lambda face: face.name)
def test_20_concurrent_callers_of_each_face_get_the_one_holder(app: App, conn: psycopg.Connection[Any],
                                                              face: Face, state: str) -> None:
    @app.task(name="sync_user", unique=True)
    def sync_user(user_id: int) -> None: ...

    holder = make_holder(state, sync_user)
    assert (holder.state() if holder is not None else None) == (None if state == "none" else state)

    results = race_sync(app, sync_user, face) if face.call is not None else race_async(app, sync_user, face)

    rows = ids_by_arg(conn, app.schema)
    [(holder_id, holder_state)] = rows[CONTESTED]  # exactly one job holds the key
    if holder is not None:
        assert (holder_id, holder_state) == (holder.id, state)  # the holder is untouched
    else:
        assert holder_state == "available"  # one caller won the race and inserted it
    expected = {n: [rows[arg][0][0] for arg in face.expected_args(n)] for n in range(CALLERS)}
    assert results == expected  # every caller got the holder, and its own fresh job where it made one
    assert len(jobs(conn, app.schema)) == 1 + (CALLERS if face.bulk else 0)


# -- a holder that finishes between the skipped insert and the holder lookup ---------------------------


class _RacingConnection(psycopg.Connection[Any]):
    """A real connection that calls `after(query)` after each of its statements, so that another session
    can act in the window between two statements of one enqueue (the skipped unique insert and the
    holder lookup), made to happen on purpose."""

    after: Callable[[str], None] | None = None

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        cur = super().execute(query, params, **kwargs)
        if self.after is not None:
            self.after(str(query))
        return cur


class _ARacingConnection(psycopg.AsyncConnection[Any]):
    """Async twin of _RacingConnection."""

    after: Callable[[str], None] | None = None

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        cur = await super().execute(query, params, **kwargs)
        if self.after is not None:
            self.after(str(query))
        return cur


def enqueue_racing(app: App, task: UniqueTask, face: Face, after: Callable[[str], None],
                   database_url: str) -> list[int]:
    """Enqueue by `face` (as caller 0) on a connection that calls `after(query)` after each statement."""
    if face.call is not None:
        with _RacingConnection.connect(database_url, autocommit=True) as racing, app.bind(racing):
            racing.after = after
            return [ref.id for ref in face.call(app, task, 0)]
    assert face.acall is not None
    acall = face.acall

    async def main() -> list[int]:
        async with await _ARacingConnection.connect(database_url, autocommit=True) as racing:
            racing.after = after
            with app.bind(racing):
                return [ref.id for ref in await acall(app, task, 0)]

    return asyncio.run(main())


class HolderRace:
    """Finishes the live holder of CONTESTED's key right after each skipped unique insert; with
    `replace`, also makes a new live holder right after each lookup that found none."""

    def __init__(self, app: App, conn: psycopg.Connection[Any], holder: JobRef, *, times: int,
                 replace: bool) -> None:
        self.app, self.conn, self.times, self.replace = app, conn, times, replace
        self.holders = [holder.id]
        self.inserts = 0

    def __call__(self, query: str) -> None:
        q = self.app.store.queries
        if query in (q["job_insert"], q["job_insert_many"]):
            self.inserts += 1
            if self.inserts <= self.times:
                self._sql("UPDATE {} SET state = 'completed' WHERE id = %s RETURNING id", self.holders[-1])
        elif query == q["job_get_id_by_unique_key"] and self.replace and self.inserts < self.times:
            self.holders.append(self._sql("INSERT INTO {0} (task, queue, args, unique_key) SELECT task, queue, "
                                          "args, unique_key FROM {0} WHERE id = %s RETURNING id", self.holders[-1]))

    def _sql(self, template: str, job_id: int) -> int:
        table = psycopg.sql.Identifier(self.app.schema, "jobs")
        row = self.conn.execute(psycopg.sql.SQL(template).format(table), [job_id]).fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize("face", FACES, ids=lambda face: face.name)
def test_enqueue_when_the_holder_finishes_between_insert_and_lookup(app: App, conn: psycopg.Connection[Any],
                                                                    database_url: str, face: Face) -> None:
    """The key is free again once the holder finished: every face inserts a fresh job (the bulk paths
    raised DatabaseError here while the single paths inserted again)."""

    @app.task(name="once", unique=True)
    def once(user_id: int) -> None: ...

    holder = once.delay(CONTESTED)
    race = HolderRace(app, conn, holder, times=1, replace=False)

    ids = enqueue_racing(app, once, face, race, database_url)

    rows = ids_by_arg(conn, app.schema)
    fresh = ids[-1]
    assert rows[CONTESTED] == [(holder.id, "completed"), (fresh, "available")]
    assert ids == [rows[arg][-1][0] for arg in face.expected_args(0)]
    assert len(jobs(conn, app.schema)) == 2 + (1 if face.bulk else 0)
    assert race.inserts == 2  # the skipped insert, then the one that made `fresh`


@pytest.mark.parametrize("face", FACES, ids=lambda face: face.name)
def test_every_face_gives_up_after_the_same_number_of_vanished_holders(
    app: App, conn: psycopg.Connection[Any], database_url: str, face: Face,
) -> None:
    """One retry rule for single and bulk paths: UNIQUE_INSERT_ATTEMPTS inserts, each skipped for a holder
    that then finished before the lookup, and the enqueue raises, naming the key. No job was made for
    the key; a bulk call's other row was inserted by the bulk statement (autocommit) and stays."""
    @app.task(name="once", unique=True)
    def once(user_id: int) -> None: ...

    race = HolderRace(app, conn, once.delay(CONTESTED), times=UNIQUE_INSERT_ATTEMPTS, replace=True)
    key = once.build_row((CONTESTED,), {}, EnqueueOptions()).unique_key
    with pytest.raises(pgtasks.DatabaseError, match=f"unique_key '{key}': its holder finished before it could "
                                                    f"be looked up, {UNIQUE_INSERT_ATTEMPTS} times in a row"):
        enqueue_racing(app, once, face, race, database_url)
    assert race.inserts == UNIQUE_INSERT_ATTEMPTS
    rows = ids_by_arg(conn, app.schema)
    assert rows.pop(CONTESTED) == [(job_id, "completed") for job_id in race.holders]
    assert [state for [(_, state)] in rows.values()] == (["available"] if face.bulk else [])
