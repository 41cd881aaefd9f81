"""pgtasks.testing: eager mode, assert_enqueued / refute_enqueued, drain(), and the pytest plugin."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

import pgtasks
from pgtasks import App
from pgtasks.testing import (
    DrainError,
    EagerJobRef,
    assert_enqueued,
    drain,
    eager,
    enqueued_jobs,
    refute_enqueued,
)
from tests.helpers import jobs


class Point(msgspec.Struct):
    x: int
    y: int


def test_eager_runs_delay_inline_without_touching_the_database(app: App, conn: psycopg.Connection[Any]) -> None:
    seen: list[Any] = []

    @app.task(name="move")
    def move(p: Point, when: datetime) -> Point:
        seen.append((p, when, pgtasks.current_job().task))
        return Point(p.x + 1, p.y)

    @app.task(name="amove")
    async def amove(p: Point) -> int:
        await asyncio.sleep(0)
        return p.x + pgtasks.current_job().attempt

    when = datetime(2026, 3, 1, tzinfo=UTC)
    with eager(app) as refs:
        ref = move.delay(Point(1, 2), when)
        aref = amove.delay(Point(5, 0))
        more = app.enqueue_many([move.s(Point(0, 0), when)])
        with pytest.raises(pgtasks.TaskArgumentError, match="p"):
            move.delay("not a point", when)  # type: ignore[arg-type]
    assert isinstance(ref, EagerJobRef) and ref.state() == "completed" and ref.id < 0
    assert ref.wait() == Point(2, 2) and aref.wait() == 6 and more[0].wait() == Point(1, 0)
    assert seen[0] == (Point(1, 2), when, "move")  # arguments made the same round trip as through the DB
    assert [r.task for r in refs] == ["move", "amove", "move"]
    assert jobs(conn, app.schema) == []
    move.delay(Point(1, 1), when)  # outside the block: enqueued for real
    assert len(jobs(conn, app.schema)) == 1


def test_eager_errors_propagate_or_are_recorded(app: App) -> None:
    @app.task(name="boom")
    def boom() -> None:
        raise ValueError("bad")

    @app.task(name="later")
    def later() -> None:
        raise pgtasks.Retry(in_=5)

    @app.task(name="give_up")
    def give_up() -> None:
        raise pgtasks.Cancel("no")

    with eager(app), pytest.raises(ValueError, match="bad"):
        boom.delay()
    with eager(app, propagate=False):
        ref = boom.delay()
        retried = later.delay()
        cancelled = give_up.delay()
    assert ref.state() == "discarded"
    with pytest.raises(pgtasks.JobDiscardedError, match="ValueError: bad"):
        ref.wait()
    assert retried.state() == "retryable"
    with pytest.raises(pgtasks.JobCancelledError):
        cancelled.wait()


def test_eager_adelay_inside_an_event_loop(app: App) -> None:
    @app.task(name="double")
    async def double(n: int) -> int:
        return n * 2

    async def scenario() -> tuple[Any, Any]:
        with eager(app):
            return (await double.adelay(4)).wait(), double.delay(5).wait()  # sync delay from a running loop too

    assert asyncio.run(scenario()) == (8, 10)


def test_assert_and_refute_enqueued(app: App) -> None:
    @app.task(name="email", queue="mail")
    def email(to: str, when: datetime, urgent: bool = False) -> None: ...

    when = datetime(2026, 1, 1, 9, tzinfo=UTC)
    with app.transaction():
        email.delay("a@example.com", when)
        assert_enqueued(email, to="a@example.com")  # sees the open transaction's jobs
    email.delay("b@example.com", when, urgent=True)
    rows = assert_enqueued(email, to="b@example.com", when=when, urgent=True, queue="mail")
    assert rows[0]["queue"] == "mail"
    assert_enqueued(email, when=when, count=2)
    refute_enqueued(email, to="c@example.com")
    refute_enqueued(email, to="a@example.com", queue="default")
    with pytest.raises(AssertionError, match=r"found 0\. Jobs of email in those states: #\d+ available"):
        assert_enqueued(email, to="c@example.com")
    with pytest.raises(AssertionError, match="expected no job"):
        refute_enqueued(email, to="a@example.com")
    with pytest.raises(AssertionError, match="expected 1 job"):
        assert_enqueued(email, when=when, count=1)
    with pytest.raises(TypeError, match="no parameter"):
        enqueued_jobs(email, recipient="x")
    drain(app)
    refute_enqueued(email)
    assert len(enqueued_jobs(email, states=["completed"])) == 2


def test_drain_returns_each_attempts_outcome(app: App) -> None:
    @app.task(name="ok")
    def ok() -> None: ...

    @app.task(name="fail", max_attempts=2, retry=pgtasks.Fixed(0))
    def fail() -> None:
        raise KeyError("x")

    @app.task(name="elsewhere", queue="other")
    def elsewhere() -> None: ...

    ok.delay()
    fail.delay()
    elsewhere.delay()
    outcomes = drain(app, concurrency=1)  # every queue with pending jobs
    summary = sorted((o.task, o.attempt, o.state, o.error) for o in outcomes)
    assert summary == [("elsewhere", 1, "completed", None), ("fail", 1, "retryable", "KeyError: 'x'"),
                       ("fail", 2, "discarded", "KeyError: 'x'"), ("ok", 1, "completed", None)]
    assert drain(app) == []
    with pytest.raises(pgtasks.ConfigurationError, match="adrain"):
        async def inside() -> None:
            drain(app)
        asyncio.run(inside())


def test_drain_with_scheduled_runs_retries_and_later_jobs_now(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="flaky", max_attempts=3, retry=pgtasks.Fixed(600))
    def flaky() -> None:
        if pgtasks.current_job().attempt < 3:
            raise ConnectionError("upstream down")

    @app.task(name="tomorrow")
    def tomorrow() -> None: ...

    @app.task(name="forever")
    def forever() -> None:
        raise pgtasks.Snooze(3600)

    flaky.delay()
    tomorrow.apply_async(countdown=86_400)
    assert [(o.task, o.state) for o in drain(app)] == [("flaky", "retryable")]  # the rest must wait
    outcomes = drain(app, with_scheduled=True, concurrency=1)
    assert sorted((o.task, o.attempt, o.state) for o in outcomes) == [
        ("flaky", 2, "retryable"), ("flaky", 3, "completed"), ("tomorrow", 1, "completed")]
    assert {r["state"] for r in jobs(conn, app.schema)} == {"completed"}

    forever.delay()
    with pytest.raises(DrainError, match="ran 3 rounds") as info:
        drain(app, with_scheduled=True, max_rounds=3)
    assert [(o.task, o.state) for o in info.value.drained] == [("forever", "scheduled")] * 3
    with pytest.raises(pgtasks.ConfigurationError, match="max_rounds=0"):
        drain(app, with_scheduled=True, max_rounds=0)


def test_the_pytest_plugin_in_a_user_project(tmp_path: Path, database_url: str, app: App) -> None:
    """A user project's tests use the plugin's fixtures and marker, found through the pytest11 entry point."""
    (tmp_path / "myproj_tasks.py").write_text(textwrap.dedent("""
        import os
        import pgtasks

        app = pgtasks.App(os.environ["MYPROJ_DSN"], schema=os.environ["MYPROJ_SCHEMA"])

        @app.task(name="greet")
        def greet(name: str) -> str:
            return f"hello {name}"
    """))
    (tmp_path / "pytest.ini").write_text("[pytest]\npgtasks_app = myproj_tasks:app\n")
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import pytest
        from pgtasks.testing import assert_enqueued
        from myproj_tasks import greet

        def test_fixture_eager(pgtasks_eager):
            assert greet.delay("ann").wait() == "hello ann"
            assert [r.task for r in pgtasks_eager] == ["greet"]

        @pytest.mark.pgtasks_eager
        def test_marker_eager():
            assert greet.delay("bob").state() == "completed"

        def test_real_enqueue_and_drain(pgtasks_drain):
            ref = greet.delay("cy")
            assert_enqueued(greet, name="cy")
            assert [o.state for o in pgtasks_drain()] == ["completed"]
            assert ref.wait(timeout=5) == "hello cy"
    """))
    env = {**os.environ, "MYPROJ_DSN": database_url, "MYPROJ_SCHEMA": app.schema, "PYTHONPATH": str(tmp_path)}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_drain_runs_a_workflow_step_whose_queue_had_nothing_ready_at_the_start(app: App) -> None:
    @app.task(name="first")
    def first() -> int:
        return 1

    @app.task(name="second", queue="other")
    def second(x: int) -> int:
        return x + 1

    ref = pgtasks.chain(first.s(), second.s()).delay()
    outcomes = drain(app)
    assert [(o.task, o.state) for o in outcomes] == [("first", "completed"), ("second", "completed")]
    assert ref.wait(timeout=5) == 2
