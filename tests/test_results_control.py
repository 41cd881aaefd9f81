"""Results and control from Python: JobRef.from_id, ready/successful/result/traceback, forget, cancel,
and wait() raising an error of the task's own exception type (a real database and worker)."""

from __future__ import annotations

import asyncio
import json
import pickle
import sys
import threading
import time
from typing import Any

import psycopg
import pytest

import pgtasks
from pgtasks import App, chain
from pgtasks.testing import adrain, drain, eager, worker_thread
from tests.helpers import jobs, wait_for


class CardDeclined(ValueError):
    """A project's exception, importable by module and name: wait() raises an error of this type too."""


class Gateway:
    class Down(ConnectionError):
        """Nested: found by its qualified name."""


class NeedsCode(Exception):
    """Cannot be built from a message alone, so wait() gives the plain JobDiscardedError."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


class Elsewhere(RuntimeError):
    """Recorded under a module this process cannot import (as if defined in another service)."""


Elsewhere.__module__ = "another_service.errors"


def row(conn: psycopg.Connection[Any], app: App, job_id: int) -> dict[str, Any]:
    return next(r for r in jobs(conn, app.schema) if r["id"] == job_id)


# -- from_id -------------------------------------------------------------------------------------


def test_from_id_rebuilds_a_handle_that_reads_and_waits(app: App) -> None:
    @app.task(name="double")
    def double(x: int) -> int:
        return x * 2

    stored = double.delay(21).id  # what a web app keeps in its own table
    ref = pgtasks.JobRef.from_id(app, stored)
    assert (ref.id, ref.task) == (stored, "double")
    assert ref.state() == "available" and not ref.ready()
    drain(app)
    assert ref.wait(timeout=10) == 42
    assert ref.ready() and ref.successful() and ref.result == 42


def test_from_id_of_a_job_that_does_not_exist_or_a_bad_id(app: App) -> None:
    with pytest.raises(pgtasks.JobNotFoundError, match="job 987654 does not exist"):
        pgtasks.JobRef.from_id(app, 987654)
    with pytest.raises(pgtasks.ConfigurationError, match=r"job_id='12'.*int\(\)"):
        pgtasks.JobRef.from_id(app, "12")  # type: ignore[arg-type]
    with pytest.raises(pgtasks.ConfigurationError, match="job_id=True"):
        pgtasks.JobRef.from_id(app, True)


def test_afrom_id_and_the_async_reads(app: App) -> None:
    @app.task(name="shout")
    async def shout(word: str) -> str:
        return word.upper()

    async def scenario() -> None:
        stored = (await shout.adelay("hi")).id
        ref = await pgtasks.JobRef.afrom_id(app, stored)
        assert ref.task == "shout" and await ref.astate() == "available"
        before = await ref.astatus()
        assert (before.state, before.ready(), before.result) == ("available", False, None)
        await adrain(app)
        after = await ref.astatus()
        assert after.ready() and after.successful() and not after.failed() and after.result == "HI"
        assert await ref.await_result(timeout=10) == "HI"
        with pytest.raises(pgtasks.JobNotFoundError):
            await pgtasks.JobRef.afrom_id(app, 987654)

    asyncio.run(scenario())


# -- ready, successful, result, traceback (no waiting) -------------------------------------------


def test_status_of_a_waiting_a_running_a_completed_and_a_failed_job(app: App) -> None:
    gate, started = threading.Event(), threading.Event()

    @app.task(name="gated")
    def gated() -> str:
        started.set()
        gate.wait(60)
        return "done"

    @app.task(name="declines", max_attempts=1)
    def declines(amount: int) -> None:
        raise CardDeclined(f"card declined for {amount}")

    ok, bad = gated.delay(), declines.delay(5)
    for ref in (ok, bad):
        assert (ref.ready(), ref.successful(), ref.failed(), ref.result, ref.traceback) == (
            False, False, False, None, None)
    with worker_thread(app, poll_interval=0.1):
        assert started.wait(30)
        running = ok.status()
        assert (running.state, running.ready(), running.result, running.error) == ("running", False, None, None)
        wait_for(bad.ready, timeout=30)
        gate.set()
        assert ok.wait(timeout=30) == "done"
    assert ok.ready() and ok.successful() and not ok.failed()
    assert (ok.result, ok.traceback) == ("done", None)

    assert bad.ready() and bad.failed() and not bad.successful()
    error = bad.result
    assert isinstance(error, CardDeclined) and isinstance(error, pgtasks.JobDiscardedError)
    assert error.error_message == "card declined for 5"
    traceback = bad.traceback
    assert traceback is not None and "in declines" in traceback and "CardDeclined: card declined for 5" in traceback
    status = bad.status()
    assert status.error is not None and status.result is status.error and status.traceback == traceback


def test_status_of_a_job_that_does_not_exist(app: App) -> None:
    gone = pgtasks.JobRef(987654, "nothing", app)
    assert gone.state() is None
    for read in (gone.ready, gone.successful, gone.status, lambda: gone.result, lambda: gone.traceback):
        with pytest.raises(pgtasks.JobNotFoundError):
            read()


# -- wait(): the task's own exception type ---------------------------------------------------------


def test_wait_raises_an_error_of_the_tasks_exception_type(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="charge", max_attempts=1)
    def charge(amount: int) -> None:
        raise CardDeclined(f"declined {amount}")

    ref = charge.delay(30)
    drain(app)
    entry = row(conn, app, ref.id)["errors"][-1]
    assert (entry["type"], entry["module"]) == ("CardDeclined", __name__)  # the worker records the module

    with pytest.raises(ValueError, match="declined 30") as caught:  # a Celery-style except clause works
        ref.wait(timeout=10)
    error = caught.value
    assert isinstance(error, CardDeclined)
    assert isinstance(error, pgtasks.JobDiscardedError) and isinstance(error, pgtasks.JobFailedError)
    assert error.error_class is CardDeclined
    assert (error.job_id, error.state, error.error_type, error.error_module) == (
        ref.id, "discarded", "CardDeclined", __name__)
    assert str(error) == f"job {ref.id} ended discarded: {__name__}.CardDeclined: declined 30"
    assert type(error).__name__ == "JobDiscardedError[CardDeclined]"
    try:
        ref.wait(timeout=10)
    except CardDeclined as again:  # one class per pair of types
        assert type(again) is type(error)


def test_builtin_nested_and_pgtasks_types(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="missing", max_attempts=1)
    def missing() -> None:
        raise KeyError("sku-9")

    @app.task(name="down", max_attempts=1)
    def down() -> None:
        raise Gateway.Down("gateway unreachable")

    @app.task(name="slow", max_attempts=1, timeout=0.2)
    async def slow() -> None:
        await asyncio.sleep(30)

    refs = {name: task.delay() for name, task in (("missing", missing), ("down", down), ("slow", slow))}
    drain(app)
    with pytest.raises(KeyError) as key_error:
        refs["missing"].wait(timeout=10)
    # Its own str(), not KeyError's (which would quote the message).
    assert str(key_error.value) == f"job {refs['missing'].id} ended discarded: KeyError: 'sku-9'"
    with pytest.raises(Gateway.Down):
        refs["down"].wait(timeout=10)
    with pytest.raises(ConnectionError):
        refs["down"].wait(timeout=10)
    entry = row(conn, app, refs["slow"].id)["errors"][-1]
    assert (entry["type"], entry["module"]) == ("TimeoutError", "builtins")  # pgtasks.JobTimeoutError's record
    with pytest.raises(TimeoutError) as timed_out:
        refs["slow"].wait(timeout=10)
    assert isinstance(timed_out.value, pgtasks.JobDiscardedError)
    assert not isinstance(timed_out.value, pgtasks.WaitTimeoutError)


def test_fallbacks_name_the_type_they_could_not_use(app: App, conn: psycopg.Connection[Any]) -> None:
    class Local(Exception):
        """Defined in a function: its qualified name has <locals>, so it cannot be found again."""

    @app.task(name="local", max_attempts=1)
    def local() -> None:
        raise Local("inside")

    @app.task(name="needs_code", max_attempts=1)
    def needs_code() -> None:
        raise NeedsCode(402, "payment required")

    @app.task(name="elsewhere", max_attempts=1)
    def elsewhere() -> None:
        raise Elsewhere("from another service")

    @app.task(name="stop")
    def stop() -> None:
        raise pgtasks.Cancel("customer left")

    refs = {task.name: task.delay() for task in (local, needs_code, elsewhere, stop)}
    drain(app)
    for name, named in (("local", f"{__name__}.{Local.__qualname__}"), ("needs_code", f"{__name__}.NeedsCode"),
                        ("elsewhere", "another_service.errors.Elsewhere")):
        with pytest.raises(pgtasks.JobDiscardedError) as caught:
            refs[name].wait(timeout=10)
        error = caught.value
        assert type(error) is pgtasks.JobDiscardedError and error.error_class is None, name
        assert not isinstance(error, (Local, NeedsCode, Elsewhere, RuntimeError)), name
        assert f"ended discarded: {named}: " in str(error), str(error)
    # A task's Cancel is never re-raised as a Cancel (it would cancel a task that waits for the job).
    with pytest.raises(pgtasks.JobCancelledError) as cancelled:
        refs["stop"].wait(timeout=10)
    assert type(cancelled.value) is pgtasks.JobCancelledError
    assert (cancelled.value.error_type, cancelled.value.error_module) == ("Cancel", "pgtasks")


def test_an_error_entry_written_before_modules_were_recorded(app: App, conn: psycopg.Connection[Any]) -> None:
    """Old entries have no module: wait() raises the plain error, exactly as before."""

    @app.task(name="old")
    def old() -> None: ...

    ref = old.delay()
    old_entry = {"attempt": 1, "at": "2025-01-01T00:00:00Z", "type": "ValueError", "message": "from before",
                 "traceback": None}
    conn.execute(f'UPDATE "{app.schema}".jobs SET state = \'discarded\', finalized_at = now(), '
                 f"errors = jsonb_build_array(%s::jsonb) WHERE id = %s", (json.dumps(old_entry), ref.id))
    with pytest.raises(pgtasks.JobDiscardedError) as caught:
        ref.wait(timeout=10)
    assert type(caught.value) is pgtasks.JobDiscardedError and not isinstance(caught.value, ValueError)
    assert (caught.value.error_type, caught.value.error_module, caught.value.error_message) == (
        "ValueError", None, "from before")
    assert str(caught.value) == f"job {ref.id} ended discarded: ValueError: from before"


def test_an_error_entry_cannot_make_wait_run_a_program(app: App, conn: psycopg.Connection[Any]) -> None:
    """A row's "module" is data: naming a `__main__` module of an imported package (pgtasks', or
    unittest's under pytest) would run that program inside the waiting process (the pgtasks command
    line with this process's argv, then SystemExit). wait() imports no module at all: it raises the
    plain error for a class of a module not imported yet."""

    @app.task(name="victim")
    def victim() -> None: ...

    never_imported = "email.mime.audio"  # a stdlib module nothing in the suite imports
    assert never_imported not in sys.modules
    for module in ("pgtasks.__main__", "unittest.__main__", "pgtasks.__main__.sub", never_imported):
        ref = victim.delay()
        entry = {"attempt": 1, "at": "2025-01-01T00:00:00Z", "type": "main", "module": module,
                 "message": "planted", "traceback": None}
        conn.execute(f'UPDATE "{app.schema}".jobs SET state = \'discarded\', finalized_at = now(), '
                     f"errors = jsonb_build_array(%s::jsonb) WHERE id = %s", (json.dumps(entry), ref.id))
        with pytest.raises(pgtasks.JobDiscardedError) as caught:
            ref.wait(timeout=10)
        assert type(caught.value) is pgtasks.JobDiscardedError, module
        assert caught.value.error_module == module
        assert module.partition(".__main__")[0] + ".__main__" not in sys.modules, module
    assert never_imported not in sys.modules  # wait() imports nothing the database names


def test_pgtasks_own_errors_raised_by_a_task_do_not_pass_for_the_waits_own(app: App) -> None:
    """A task that waited for another job and timed out (or looked up a job that is gone) failed
    with pgtasks' WaitTimeoutError (JobNotFoundError). A wait for that task must not raise one of
    those: `except pgtasks.WaitTimeoutError` around it means "still running, wait again" (the way
    operations.md tells a wait's timeout from a job's), and would loop on a job that has ended."""

    @app.task(name="outer", max_attempts=1)
    def outer(inner_id: int) -> None:
        pgtasks.JobRef.from_id(app, inner_id).wait(timeout=0.05)

    @app.task(name="lookup", max_attempts=1)
    def lookup() -> None:
        pgtasks.JobRef.from_id(app, 10**15)

    never_runs = app.send_task("defined.elsewhere", queue="elsewhere")  # no worker here runs it
    waited, looked = outer.delay(never_runs.id), lookup.delay()
    drain(app)
    for ref, own in ((waited, pgtasks.WaitTimeoutError), (looked, pgtasks.JobNotFoundError)):
        with pytest.raises(pgtasks.JobDiscardedError) as caught:
            ref.wait(timeout=10)
        assert not isinstance(caught.value, own), type(caught.value).__name__
        assert type(caught.value) is pgtasks.JobDiscardedError
        assert (caught.value.error_type, caught.value.error_module) == (own.__name__, "pgtasks")
    # A soft time limit the task did not catch is the task's own outcome: still of its type.
    @app.task(name="soft", soft_timeout=0.05, max_attempts=1)
    async def soft() -> None:
        await asyncio.sleep(30)

    ref = soft.delay()
    drain(app)
    with pytest.raises(pgtasks.SoftTimeLimitExceeded):
        ref.wait(timeout=10)


def test_propagate_false_returns_the_error(app: App) -> None:
    @app.task(name="charge", max_attempts=1)
    async def charge(amount: int) -> int:
        if amount > 100:
            raise CardDeclined("over the limit")
        return amount

    async def scenario() -> None:
        ok, bad = await charge.adelay(50), await charge.adelay(500)
        await adrain(app)
        assert await ok.await_result(timeout=10, propagate=False) == 50
        error = await bad.await_result(timeout=10, propagate=False)
        assert isinstance(error, CardDeclined) and isinstance(error, pgtasks.JobDiscardedError)
        assert error.error_message == "over the limit"

    asyncio.run(scenario())


def test_typed_errors_pickle(app: App) -> None:
    @app.task(name="charge", max_attempts=1)
    def charge() -> None:
        raise CardDeclined("declined")

    ref = charge.delay()
    drain(app)
    error = ref.wait(timeout=10, propagate=False)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and isinstance(copy, CardDeclined)
    assert isinstance(copy, pgtasks.JobFailedError) and isinstance(error, pgtasks.JobFailedError)
    assert (copy.job_id, copy.error_type, copy.error_module, copy.error_message, copy.traceback, str(copy)) == (
        error.job_id, error.error_type, error.error_module, error.error_message, error.traceback, str(error))
    plain = pickle.loads(pickle.dumps(pgtasks.JobCancelledError(5, "cancelled", "Cancelled", "stop")))
    assert type(plain) is pgtasks.JobCancelledError and str(plain) == "job 5 ended cancelled: Cancelled: stop"


def test_a_workflow_wait_raises_the_failed_steps_type(app: App) -> None:
    @app.task(name="first")
    def first() -> int:
        return 1

    @app.task(name="second", max_attempts=1)
    def second(value: int) -> None:
        raise CardDeclined(f"step got {value}")

    ref = chain(first.s(), second.s()).delay()
    drain(app)
    with pytest.raises(ValueError, match="step got 1") as caught:
        ref.wait(timeout=10)
    assert isinstance(caught.value, pgtasks.JobDiscardedError) and caught.value.job_id == ref.job_ids[1]


def test_eager_refs_answer_as_real_ones(app: App) -> None:
    @app.task(name="charge")
    def charge(amount: int) -> int:
        if amount > 100:
            raise CardDeclined("over the limit")
        return amount

    with eager(app, propagate=False):
        ok, bad = charge.delay(5), charge.delay(500)
    assert ok.ready() and ok.successful() and ok.result == 5 and ok.status().state == "completed"
    assert bad.ready() and bad.failed() and isinstance(bad.result, CardDeclined)
    with pytest.raises(ValueError, match="over the limit"):
        bad.wait()
    assert isinstance(bad.wait(propagate=False), pgtasks.JobDiscardedError)
    assert ok.cancel() == "finished"
    ok.forget()
    assert ok.result is None and ok.wait() is None

    @app.task(name="later")
    def later() -> None:
        raise pgtasks.Snooze(60)

    with eager(app):
        snoozed = later.delay()
    assert snoozed.state() == "scheduled" and not snoozed.ready() and snoozed.result is None
    with pytest.raises(pgtasks.JobStateError):
        snoozed.forget()
    assert snoozed.cancel("no need") == "cancelled"
    with pytest.raises(pgtasks.JobCancelledError, match="Cancelled: no need"):
        snoozed.wait()


# -- forget ----------------------------------------------------------------------------------------


def test_forget_drops_the_stored_result_and_keeps_the_row(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="secret")
    def secret() -> str:
        return "token-123"

    ref = secret.delay()
    with pytest.raises(pgtasks.JobStateError, match=f"job {ref.id} is available: forget\\(\\)"):
        ref.forget()  # its result is still to come
    drain(app)
    assert ref.result == "token-123"
    ref.forget()
    stored = row(conn, app, ref.id)
    assert stored["result"] is None and stored["state"] == "completed" and stored["finalized_at"] is not None
    assert ref.result is None and ref.wait(timeout=10) is None and ref.successful()
    ref.forget()  # again: nothing left to drop, not an error
    conn.execute(f'DELETE FROM "{app.schema}".jobs WHERE id = %s', (ref.id,))
    with pytest.raises(pgtasks.JobNotFoundError):
        ref.forget()


def test_aforget_and_a_failed_job_keeps_its_error(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="declines", max_attempts=1)
    def declines() -> None:
        raise CardDeclined("no")

    async def scenario() -> None:
        ref = await declines.adelay()
        await adrain(app)
        await ref.aforget()
        assert isinstance((await ref.astatus()).result, CardDeclined)  # the errors are not the result

    asyncio.run(scenario())
    assert len(jobs(conn, app.schema)[0]["errors"]) == 1


def test_forget_refuses_a_step_its_workflow_may_still_read(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="produce", queue="first")
    def produce() -> int:
        return 7

    @app.task(name="consume", queue="second")
    def consume(value: int) -> int:
        return value + 1

    workflow = chain(produce.s(), consume.s()).delay()
    drain(app, ["first"])  # the first step completed; its successor has not run yet
    step = pgtasks.JobRef.from_id(app, workflow.job_ids[0])
    assert step.result == 7
    with pytest.raises(pgtasks.JobStateError, match=f"step of workflow {workflow.id}"):
        step.forget()
    assert row(conn, app, step.id)["result"] == 7
    drain(app, ["second"])
    assert workflow.wait(timeout=10) == 8
    step.forget()
    assert step.result is None


# -- cancel ----------------------------------------------------------------------------------------


def test_cancel_a_waiting_job_and_a_finished_one(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="later")
    def later() -> int:
        return 1

    done = later.delay()
    drain(app)
    assert done.cancel() == "finished" and done.result == 1  # left as it was

    waiting, scheduled = later.delay(), later.apply_async(countdown=3600)
    assert waiting.cancel() == "cancelled"
    assert scheduled.cancel("not needed any more") == "cancelled"
    assert drain(app, with_scheduled=True) == []  # nothing left to run
    with pytest.raises(pgtasks.JobCancelledError) as caught:
        scheduled.wait(timeout=10)
    assert (caught.value.error_type, caught.value.error_message) == ("Cancelled", "not needed any more")
    assert row(conn, app, waiting.id)["errors"][-1]["message"] == "cancelled through JobRef.cancel()"
    assert waiting.cancel() == "finished"  # cancelled already
    with pytest.raises(pgtasks.JobNotFoundError):
        pgtasks.JobRef(987654, "later", app).cancel()
    with pytest.raises(pgtasks.ConfigurationError, match="reason=5"):
        waiting.cancel(5)  # type: ignore[arg-type]


def test_cancel_a_running_async_job_reaches_its_worker_by_the_control_channel(app: App) -> None:
    """poll_interval=3600: the worker's own check of its running jobs cannot be what stops the job
    within the wait's 60 s, only the control-channel NOTIFY that cancel() sends."""
    started = threading.Event()
    saw: list[bool] = []

    @app.task(name="forever")
    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            saw.append(pgtasks.current_job().cancelled)
            raise

    ref = forever.delay()
    with worker_thread(app, poll_interval=3600, listen=True):
        assert started.wait(30)
        assert ref.cancel() == "cancel_requested"
        with pytest.raises(pgtasks.JobCancelledError) as caught:
            ref.wait(timeout=60, poll_interval=0.2)
    assert saw == [True]
    assert caught.value.error_type == "Cancelled" and ref.state() == "cancelled"


def test_acancel_a_running_sync_job_that_checks_current_job(app: App, conn: psycopg.Connection[Any]) -> None:
    started = threading.Event()

    @app.task(name="chunks")
    def chunks() -> str:
        started.set()
        for step in range(1200):
            if pgtasks.current_job().cancelled:
                return f"stopped at {step}"
            time.sleep(0.05)
        return "finished"

    ref = chunks.delay()
    with worker_thread(app, poll_interval=3600, listen=True):
        assert started.wait(30)
        assert asyncio.run(ref.acancel("user pressed stop")) == "cancel_requested"
        assert row(conn, app, ref.id)["cancel_requested_at"] is not None
        with pytest.raises(pgtasks.JobCancelledError):
            ref.wait(timeout=60, poll_interval=0.2)
    stored = row(conn, app, ref.id)
    assert stored["state"] == "cancelled" and stored["result"] is None
    assert asyncio.run(ref.acancel()) == "finished"
