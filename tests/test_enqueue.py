"""Integration tests: enqueueing against a real PostgreSQL, transactional semantics, NOTIFY."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgtasks
from pgtasks import App, ConfigurationError, DuplicateTaskError, TaskArgumentError
from tests.helpers import jobs


def register(app: App) -> tuple[pgtasks.Task[..., int], pgtasks.Task[..., Any]]:
    @app.task(name="greet")
    def greet(name: str, times: int = 1) -> int:
        return times

    @app.task(name="agreet", queue="async")
    async def agreet(n: int) -> int:
        return n

    return greet, agreet


def test_delay_inserts_available_job_with_encoded_args(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, _ = register(app)
    ref = greet.delay("ada", times=3)
    [job] = jobs(conn, app.schema)
    assert job["id"] == ref.id
    assert (job["task"], job["queue"], job["state"], job["attempt"], job["priority"]) == (
        "greet", "default", "available", 0, 0)
    assert job["args"] == {"name": "ada", "times": 3}
    assert ref.state() == "available"


def test_direct_call_runs_inline_and_enqueues_nothing(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, _ = register(app)
    assert greet("ada", 4) == 4
    assert jobs(conn, app.schema) == []


def test_bad_arguments_fail_at_delay_and_insert_nothing(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, _ = register(app)
    with pytest.raises(TaskArgumentError, match="parameter 'times'"):
        greet.delay("ada", times="many")
    with pytest.raises(TaskArgumentError, match="missing a required argument: 'name'"):
        greet.delay()
    with pytest.raises(TaskArgumentError, match="unexpected keyword argument 'colour'"):
        greet.delay("ada", colour="red")
    assert jobs(conn, app.schema) == []


def test_apply_async_options(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, _ = register(app)
    eta = datetime.now(UTC) + timedelta(hours=1)
    greet.apply_async(args=("a",), countdown=60)
    greet.apply_async(args=("b",), eta=eta, priority=7, queue="mail", max_attempts=3)
    greet.apply_async(kwargs={"name": "c"}, expires=30)
    greet.configure(queue="mail", priority=2).delay("d")
    rows = jobs(conn, app.schema)
    assert [r["state"] for r in rows] == ["scheduled", "scheduled", "available", "available"]
    assert 59 <= (rows[0]["run_at"] - rows[0]["created_at"]).total_seconds() <= 61
    assert rows[1]["run_at"] == eta
    assert (rows[1]["priority"], rows[1]["queue"], rows[1]["max_attempts"]) == (7, "mail", 3)
    assert 29 <= (rows[2]["expires_at"] - rows[2]["created_at"]).total_seconds() <= 31
    assert (rows[3]["queue"], rows[3]["priority"]) == ("mail", 2)


def test_transaction_commit_and_rollback(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, _ = register(app)
    conn.execute(f'CREATE TABLE "{app.schema}".orders (id int)')
    with app.transaction() as tx:
        tx.execute(f'INSERT INTO "{app.schema}".orders VALUES (1)')
        kept = greet.delay("kept")
    with pytest.raises(RuntimeError), app.transaction() as tx:
        tx.execute(f'INSERT INTO "{app.schema}".orders VALUES (2)')
        greet.delay("lost")
        raise RuntimeError("business failure")
    assert [r["id"] for r in jobs(conn, app.schema)] == [kept.id]
    assert conn.execute(f'SELECT id FROM "{app.schema}".orders').fetchall() == [(1,)]


def test_bind_caller_owned_connection(app: App, database_url: str, conn: psycopg.Connection[Any]) -> None:
    greet, _ = register(app)
    with psycopg.connect(database_url) as own:  # autocommit off: the caller owns the transaction
        with app.bind(own):
            greet.delay("pending")
        assert jobs(conn, app.schema) == []  # not visible before the caller commits
        own.rollback()
        with app.bind(own):
            greet.delay("committed")
        greet.apply_async(args=("explicit",), connection=own)
        own.commit()
    assert [r["args"]["name"] for r in jobs(conn, app.schema)] == ["committed", "explicit"]


def test_bulk_enqueue_in_one_statement_and_transaction(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, agreet = register(app)
    refs = greet.delay_many([("a",), ("b", 2), greet.s("c", times=3)])
    mixed = app.enqueue_many([agreet.s(1), greet.s("d"), agreet.s(2)])
    rows = jobs(conn, app.schema)
    assert [r.id for r in refs + mixed] == [r["id"] for r in rows]
    assert [r["task"] for r in rows] == ["greet"] * 3 + ["agreet", "greet", "agreet"]
    assert rows[2]["args"] == {"name": "c", "times": 3}
    with pytest.raises(RuntimeError), app.transaction():
        greet.delay_many([("x",), ("y",)])
        raise RuntimeError
    with pytest.raises(TaskArgumentError):
        greet.delay_many([("ok",), (1, 2, 3)])
    assert len(jobs(conn, app.schema)) == 6


def test_delay_many_takes_signatures_with_keyword_arguments(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, _ = register(app)
    # 600 rows take the COPY path; the 3 mixed ones the JSON insert. Both keep input order.
    refs = greet.delay_many([greet.s(name=f"n{i}", times=i) for i in range(600)])
    mixed = greet.delay_many([greet.s(times=2, name="kw"), ["listed", 4], greet.configure(priority=5).s("pos")])
    rows = jobs(conn, app.schema)
    assert [r.id for r in refs + mixed] == [r["id"] for r in rows]
    assert [r["args"] for r in rows[:600]] == [{"name": f"n{i}", "times": i} for i in range(600)]
    assert [(r["args"], r["priority"]) for r in rows[600:]] == [
        ({"name": "kw", "times": 2}, 0), ({"name": "listed", "times": 4}, 0), ({"name": "pos"}, 5)]


def test_delay_many_refuses_what_is_not_a_call_of_its_task(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, agreet = register(app)
    with pytest.raises(TaskArgumentError, match=r"delay_many\(\) of greet: item 1 is dict \{'name': 'b'\}; pass an "
                                                r"args tuple, such as \(1, 2\), or a signature, such as greet.s"):
        greet.delay_many([("a",), {"name": "b"}])  # type: ignore[list-item]
    with pytest.raises(TaskArgumentError, match="item 0 is str 'abc'"):
        greet.delay_many(["abc"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match=r"item 1 is a signature of agreet; enqueue jobs of several tasks "
                                                 r"with app.enqueue_many\(\)"):
        greet.delay_many([greet.s("a"), agreet.s(1)])
    with pytest.raises(TaskArgumentError, match="item 2 is Chain"):
        greet.delay_many([greet.s("a"), greet.s("b"), greet.s("c") | greet.s()])  # type: ignore[list-item]
    assert jobs(conn, app.schema) == []


def test_bulk_errors_name_the_parameter_as_delay_does(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, _ = register(app)
    calls = [greet.s(name=f"n{i}") for i in range(700)]
    for bad, message in [(greet.s(name="x", times="many"), "greet: invalid argument: parameter 'times'"),
                         (greet.s(name="x", extra=1), "greet: got an unexpected keyword argument 'extra'"),
                         (greet.s(times=1), "greet: missing a required argument: 'name'"),
                         (greet.s(name="x", times=float("nan")), "greet: argument 'times': nan has no JSON form")]:
        with pytest.raises(TaskArgumentError) as single:
            greet.delay(*bad.args, **bad.kwargs)
        with pytest.raises(TaskArgumentError) as bulk:
            greet.delay_many([*calls[:350], bad, *calls[350:]])
        assert str(bulk.value) == str(single.value)
        assert str(bulk.value).startswith(message)
    assert jobs(conn, app.schema) == []


def test_unique_key_returns_the_live_job(app: App, conn: psycopg.Connection[Any]) -> None:
    greet, _ = register(app)
    first = greet.apply_async(args=("a",), unique_key="report:1")
    again = greet.apply_async(args=("b",), unique_key="report:1")
    bulk = greet.delay_many([greet.configure(unique_key="report:1").s("c"), greet.s("d")])
    assert first.id == again.id == bulk[0].id
    assert len(jobs(conn, app.schema)) == 2


def test_notify_only_after_commit_and_once_per_transaction_and_queue(
    app: App, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    greet, agreet = register(app)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{app.schema}.jobs"')
        with app.transaction():
            for i in range(10):
                greet.delay(f"n{i}")
            agreet.delay(1)
            assert _notifications(listener) == []  # nothing before commit
        assert sorted(_notifications(listener, expected=2)) == ["async", "default"]
        greet.apply_async(args=("later",), countdown=60)  # scheduled: no wakeup needed now
        assert _notifications(listener) == []


def _notifications(listener: psycopg.Connection[Any], *, expected: int = 0, quiet: float = 0.3) -> list[str]:
    """The payloads of the `expected` notifications (waited for however loaded the machine is), plus
    any more that arrive within `quiet` seconds: an absence can only be checked over a window."""
    payloads = [n.payload for n in listener.notifies(timeout=30, stop_after=expected)] if expected else []
    return payloads + [n.payload for n in listener.notifies(timeout=quiet)]


def test_async_enqueue_joins_async_transaction(app: App, database_url: str, conn: psycopg.Connection[Any]) -> None:
    _, agreet = register(app)

    async def scenario() -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_url) as own:
            with app.bind(own):
                await agreet.adelay(1)
            await own.rollback()
            with app.bind(own):
                ref = await agreet.adelay(2)
                await agreet.adelay_many([(3,), (4,)])
            await own.commit()
        async with app.atransaction():
            await agreet.aapply_async(args=(5,))
        standalone = await agreet.adelay(6)
        return [ref.id, standalone.id]

    ids = asyncio.run(scenario())
    rows = jobs(conn, app.schema)
    assert [r["args"]["n"] for r in rows] == [2, 3, 4, 5, 6]
    assert ids == [rows[0]["id"], rows[-1]["id"]]


def test_sync_delay_refuses_a_bound_async_connection(app: App, database_url: str) -> None:
    greet, _ = register(app)

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as own:
            with app.bind(own), pytest.raises(ConfigurationError, match="adelay"):
                greet.delay("x")

    asyncio.run(scenario())


def test_duplicate_task_names_are_an_error(app: App) -> None:
    register(app)
    with pytest.raises(DuplicateTaskError, match="'greet' is already registered"):
        @app.task(name="greet")
        def other() -> None: ...


def test_bad_task_and_app_settings_are_rejected(database_url: str) -> None:
    with pytest.raises(ConfigurationError, match="options="):
        App("postgresql://app@127.0.0.1:6432/db?options=-c%20statement_timeout%3D5000")
    with pytest.raises(ConfigurationError, match="schema="):
        App(database_url, schema="Bad-Name")
    app = App(database_url)
    with pytest.raises(ConfigurationError, match="timeout=0"):
        app.task(timeout=0)
    with pytest.raises(ConfigurationError, match="priority="):
        app.task(priority=10**6)
