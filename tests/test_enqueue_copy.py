"""Bulk enqueue by COPY (job_reserve_ids + job_copy_now): same rows, ids in input order, the
caller's transaction, and the NOTIFY trigger, as the JSON insert it replaces for big batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgtasks import App, DatabaseError
from pgtasks.storage import jobs as jobs_module
from pgtasks.storage.store import COPY_MIN_ROWS
from tests.helpers import jobs, wait_for, worker_thread
from tests.pgbouncer_fixtures import PgBouncerLab, Target

N = COPY_MIN_ROWS + 100
COLUMNS = ("task", "queue", "args", "state", "priority", "attempt", "max_attempts", "unique_key", "expires_at",
           "errors", "result", "claims")
# Characters the COPY text format must escape, in the arguments and in a queue name.
AWKWARD = 'tab\t nl\n cr\r back\\slash "quote" \\N é 🙂'


@pytest.fixture
def copies(app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the rows each COPY took, so a test knows which path ran."""
    seen: list[int] = []
    copy_now = jobs_module.copy_now  # one operation, run by the sync and the async driver alike

    def spy(q: Any, rows: Any) -> Any:
        seen.append(len(rows))
        return copy_now(q, rows)

    monkeypatch.setattr(jobs_module, "copy_now", spy)
    yield seen


def test_copied_rows_match_the_json_insert_and_ids_follow_input_order(
    app: App, conn: psycopg.Connection[Any], copies: list[int],
) -> None:
    @app.task(name="echo", queue=AWKWARD, priority=2, max_attempts=3)
    def echo(i: int, text: str) -> None: ...

    small = echo.delay_many([(i, AWKWARD) for i in range(3)])  # the JSON insert
    big = echo.delay_many([(i, AWKWARD) for i in range(N)])  # COPY
    assert copies == [N]
    rows = jobs(conn, app.schema)
    by_id = {r["id"]: r for r in rows}
    assert [ref.id for ref in big] == sorted(ref.id for ref in big), "ids ascend in input order"
    assert [by_id[ref.id]["args"] for ref in big] == [{"i": i, "text": AWKWARD} for i in range(N)]
    reference = {k: by_id[small[0].id][k] for k in COLUMNS if k != "args"}
    assert reference["queue"] == AWKWARD and reference["state"] == "available"
    assert all({k: by_id[ref.id][k] for k in COLUMNS if k != "args"} == reference for ref in big)
    assert all(by_id[ref.id]["run_at"] == by_id[ref.id]["created_at"] for ref in big), "run_at = now()"
    # The ids came from the identity sequence, so a later plain insert does not collide.
    assert echo.delay(0, "after").id > max(ref.id for ref in big)


def test_copy_notifies_once_per_queue_and_wakes_a_listening_worker(
    app: App, database_url: str, conn: psycopg.Connection[Any], copies: list[int],
) -> None:
    @app.task(name="mail", queue="mail")
    def mail(i: int) -> None: ...

    @app.task(name="sms", queue="sms")
    def sms(i: int) -> None: ...

    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{app.schema}.jobs"')
        app.enqueue_many([mail.s(i) if i % 2 else sms.s(i) for i in range(N)])
        assert copies == [N]
        # Both arrive at the commit; wait for them however loaded the machine is, then for a third.
        received = sorted(n.payload for n in listener.notifies(timeout=30, stop_after=2))
        received += [n.payload for n in listener.notifies(timeout=0.5)]
        assert received == ["mail", "sms"]  # once per queue, not once per row

    done: set[int] = set()

    @app.task(name="ping", queue="ping")
    def ping(i: int) -> None:
        done.add(i)

    # A worker polling every 30 s finishes a COPY's jobs at once only if the trigger woke it.
    with worker_thread(app, queues=["ping"], poll_interval=30.0, concurrency=10) as worker:
        wait_for(lambda: worker.listening and worker.notifier is not None and worker.notifier.connected.is_set(),
                 timeout=30)
        # Past its first (empty) fetch and waiting: from here only a wakeup or the 30 s poll fetches.
        wait_for(lambda: worker.fetches >= 1 and worker.waits >= 1, timeout=30)
        ping.delay_many([(i,) for i in range(N)])
        assert copies == [N, N]
        deadline = time.monotonic() + 10
        while len(done) < N:
            assert time.monotonic() < deadline, f"{len(done)} of {N} jobs ran: no wakeup"
            time.sleep(0.01)


def test_copy_joins_the_callers_transaction(
    app: App, database_url: str, conn: psycopg.Connection[Any], copies: list[int],
) -> None:
    @app.task(name="add")
    def add(x: int) -> None: ...

    with pytest.raises(RuntimeError), app.transaction():
        add.delay_many([(i,) for i in range(N)])
        raise RuntimeError
    with psycopg.connect(database_url) as own:  # not autocommit: the caller commits or rolls back
        add.delay_many([(i,) for i in range(N)], connection=own)
        assert jobs(conn, app.schema) == [], "invisible before the caller commits"
        own.rollback()
        refs = add.delay_many([(i,) for i in range(N)], connection=own)
        own.commit()
    assert copies == [N, N, N]
    assert [r["id"] for r in jobs(conn, app.schema)] == [ref.id for ref in refs]


def test_async_copy_on_a_bound_connection_and_on_the_pool(
    app: App, database_url: str, conn: psycopg.Connection[Any], copies: list[int],
) -> None:
    @app.task(name="aadd")
    async def aadd(x: int) -> None: ...

    async def scenario() -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_url) as own:
            with app.bind(own):
                await aadd.adelay_many([(i,) for i in range(N)])
            await own.rollback()
            with app.bind(own):
                kept = await aadd.adelay_many([(i,) for i in range(N)])
            await own.commit()
        pooled = await aadd.adelay_many([(N + i,) for i in range(N)])
        return [ref.id for ref in kept + pooled]

    ids = asyncio.run(scenario())
    assert copies == [N, N, N]
    rows = jobs(conn, app.schema)
    assert [r["id"] for r in rows] == ids
    assert [r["args"]["x"] for r in rows] == list(range(2 * N))


def test_a_failed_copy_raises_inserts_nothing_and_leaves_the_pool_usable(
    app: App, conn: psycopg.Connection[Any], copies: list[int],
) -> None:
    @app.task(name="text")
    def text(s: str) -> None: ...

    # A row the server refuses, the last of the stream: the COPY fails on the server mid-stream.
    # (A NUL, which jsonb rejects, no longer reaches it: .delay() refuses it first.)
    conn.execute(f'ALTER TABLE "{app.schema}".jobs ADD CONSTRAINT no_boom CHECK (args->>\'s\' <> \'boom\')')
    with pytest.raises(DatabaseError, match="no_boom"):
        text.delay_many([("ok",)] * (N - 1) + [("boom",)])
    assert jobs(conn, app.schema) == []
    assert len(text.delay_many([("ok",)] * N)) == N
    assert copies == [N, N] and len(jobs(conn, app.schema)) == N


@pytest.mark.pgbouncer
def test_copy_through_each_pooler_mode(
    target: Target, target_app: App, pgbouncer: PgBouncerLab, conn: psycopg.Connection[Any], copies: list[int],
) -> None:
    @target_app.task(name="add")
    def add(x: int) -> None: ...

    refs = add.delay_many([(i,) for i in range(N)])  # on the app's pool
    with pytest.raises(RuntimeError), target_app.transaction():  # on a bound connection
        add.delay_many([(i,) for i in range(N)])
        raise RuntimeError
    if target.name == "direct":  # and once per run through a statement pool (no transactions at all)
        bouncer = pgbouncer.start("statement", "statement")
        statement_app = App(bouncer.dsn, schema=target_app.schema)
        try:
            statement_add = statement_app.task(name="add")(add.func)
            refs += statement_add.delay_many([(N + i,) for i in range(N)])
        finally:
            statement_app.close()
    assert copies == [N] * (len(refs) // N + 1)
    rows = jobs(conn, target_app.schema)
    assert [r["id"] for r in rows] == [ref.id for ref in refs]
    assert [r["args"]["x"] for r in rows] == list(range(len(refs)))
