"""JobRef.wait() / await_result(): results decoded to the return annotation, errors for failed jobs."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import pytest

import pgtasks
from pgtasks import App
from pgtasks.testing import adrain, drain, worker_thread
from tests.helpers import jobs, wait_for


class Receipt(msgspec.Struct):
    order: int
    at: datetime


def test_wait_returns_the_result_decoded_to_the_return_annotation(app: App) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    @app.task(name="receipt")
    def receipt(order: int) -> Receipt:
        return Receipt(order, at)

    ref = receipt.delay(7)
    drain(app)
    value = ref.wait(timeout=5)
    assert value == Receipt(7, at)
    assert isinstance(value, Receipt) and isinstance(value.at, datetime)


def test_wait_on_a_discarded_job_raises_with_the_exception_type_and_message(app: App) -> None:
    @app.task(name="boom", max_attempts=1)
    def boom() -> int:
        raise LookupError("no such customer 42")

    ref = boom.delay()
    drain(app)
    with pytest.raises(pgtasks.JobDiscardedError) as info:
        ref.wait(timeout=5)
    assert info.value.error_type == "LookupError"
    assert info.value.error_message == "no such customer 42"
    assert info.value.state == "discarded" and info.value.job_id == ref.id
    assert info.value.traceback is not None and "LookupError" in info.value.traceback
    assert isinstance(info.value, pgtasks.JobFailedError)


def test_wait_on_a_cancelled_job_raises_job_cancelled(app: App) -> None:
    @app.task(name="stop")
    def stop() -> None:
        raise pgtasks.Cancel("customer left")

    ref = stop.delay()
    drain(app)
    with pytest.raises(pgtasks.JobCancelledError) as info:
        ref.wait(timeout=5)
    assert (info.value.error_type, info.value.error_message) == ("Cancel", "customer left")


def test_wait_times_out_while_the_job_is_pending(app: App) -> None:
    @app.task(name="later")
    def later() -> None: ...

    ref = later.delay()
    started = time.monotonic()
    with pytest.raises(pgtasks.WaitTimeoutError):
        ref.wait(timeout=0.3, poll_interval=0.1)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(TimeoutError):  # also a builtin TimeoutError
        ref.wait(timeout=0.05, listen=False, poll_interval=0.01)


def test_wait_for_an_unknown_job_raises_not_found(app: App) -> None:
    ref = pgtasks.JobRef(987654, "nothing", app)
    with pytest.raises(pgtasks.JobNotFoundError):
        ref.wait(timeout=1)


def test_store_result_false_keeps_the_return_value_out(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="secret", store_result=False)
    def secret() -> str:
        return "token-123"

    ref = secret.delay()
    drain(app)
    assert jobs(conn, app.schema)[0]["result"] is None
    assert ref.wait(timeout=5) is None


def waiter_is_listening(conn: psycopg.Connection[Any], application_name: str) -> bool:
    """wait()'s connection LISTENed, then read the job (still pending), and now sits idle for NOTIFYs."""
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'idle' "
                       "AND query NOT ILIKE 'LISTEN%%'", (application_name + "-waiter",)).fetchone()
    return row == (1,)


def test_wait_wakes_on_the_completion_notify_not_the_poll(
    app: App, conn: psycopg.Connection[Any],
) -> None:
    """With a 30 s poll interval, only the NOTIFY from the jobs_notify_final trigger can wake wait() quickly."""
    own = App(app.dsn, schema=app.schema, application_name=f"pgt-wait-{uuid.uuid4().hex[:8]}")
    gate = threading.Event()
    opener_saw_listening: list[bool] = []

    @own.task(name="gated")
    def gated() -> str:
        gate.wait(60)
        return "done"

    def open_once_wait_listens() -> None:  # the job finishes only after wait() read it pending
        try:
            wait_for(lambda: waiter_is_listening(conn, own.application_name), timeout=30, interval=0.02)
            opener_saw_listening.append(True)
        finally:
            gate.set()

    ref = gated.delay()
    opener = threading.Thread(target=open_once_wait_listens)
    with worker_thread(own, poll_interval=0.05):
        opener.start()
        started = time.monotonic()
        assert ref.wait(timeout=40, poll_interval=30) == "done"
        elapsed = time.monotonic() - started
        opener.join(30)
    own.close()
    assert opener_saw_listening == [True]
    assert elapsed < 10, f"wait() took {elapsed:.1f}s: it was not woken by the completion NOTIFY"


def test_wait_polls_when_listen_is_off(app: App) -> None:
    @app.task(name="quick")
    def quick(x: int) -> int:
        return x + 1

    ref = quick.delay(1)
    with worker_thread(app, poll_interval=0.05):
        assert ref.wait(timeout=20, poll_interval=0.05, listen=False) == 2


def test_await_result_for_completed_and_failed_jobs(app: App) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="fail", max_attempts=1)
    async def fail() -> None:
        raise RuntimeError("kaput")

    async def scenario() -> None:
        ok = await add.adelay(2, 3)
        bad = await fail.adelay()
        await adrain(app)
        assert await ok.await_result(timeout=5) == 5
        with pytest.raises(pgtasks.JobDiscardedError, match="RuntimeError: kaput"):
            await bad.await_result(timeout=5)
        pending = await add.adelay(1, 1)
        with pytest.raises(pgtasks.WaitTimeoutError):
            await pending.await_result(timeout=0.2, poll_interval=0.05)

    asyncio.run(scenario())
    app.close()
