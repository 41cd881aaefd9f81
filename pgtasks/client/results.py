"""Job handles and their results: JobRef, and waiting for an outcome (LISTEN on completions, polling as the net)."""

from __future__ import annotations

import asyncio
import time
import typing
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, Protocol

import msgspec
import psycopg
from psycopg import AsyncConnection, Connection

from pgtasks.core.channels import control_channel, done_channel
from pgtasks.core.context import JobProgress
from pgtasks.core.definition import TaskDefinition
from pgtasks.core.errors import (
    ConfigurationError,
    DatabaseError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    ResultDecodeError,
    WaitTimeoutError,
)
from pgtasks.core.failures import failure_error
from pgtasks.core.models import FINAL_STATES, JobState
from pgtasks.storage.connections import connection_kwargs
from pgtasks.storage.database import Database
from pgtasks.storage.store import Store


class JobSource(Protocol):
    """What a JobRef reads its job from: an App provides it."""

    @property
    def database(self) -> Database: ...

    @property
    def store(self) -> Store: ...

    @property
    def tasks(self) -> Mapping[str, TaskDefinition[Any, Any]]: ...


# What JobRef.cancel() did: the job was waiting and is now cancelled; it was running and its worker
# is told to stop it (it ends cancelled soon after); it had already finished, and nothing changed.
CancelResult = Literal["cancelled", "cancel_requested", "finished"]
CANCEL_REASON = "cancelled through JobRef.cancel()"


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One look at a job, without waiting: its state and, once it finished, its outcome.

    `result` is Celery's AsyncResult.result: the return value (decoded to the task's return
    annotation) once the job completed; the error, a JobFailedError (see JobRef.wait()), once it
    ended cancelled or discarded; None while it has not finished. `error` is that JobFailedError
    (None otherwise) and `traceback` its task's traceback (None when none was recorded).
    """

    id: int
    task: str
    state: str
    result: Any = None
    error: JobFailedError | None = None

    def ready(self) -> bool:
        """The job finished: completed, cancelled or discarded."""
        return self.state in FINAL_STATES

    def successful(self) -> bool:
        """The job completed (its result is `result`)."""
        return self.state == JobState.COMPLETED

    def failed(self) -> bool:
        """The job ended without a result: cancelled or discarded (the error is `error`)."""
        return self.error is not None

    @property
    def traceback(self) -> str | None:
        return None if self.error is None else self.error.traceback


@dataclass(frozen=True, slots=True)
class JobRef:
    """A handle on an enqueued job. `.delay()` returns one; JobRef.from_id() rebuilds one from a stored id.

    Every method reads the job's row when called (one primary-key lookup); nothing is cached, so
    two calls can see two states. `status()` reads everything at once.
    """

    id: int
    task: str
    app: JobSource = field(repr=False, compare=False)

    @classmethod
    def from_id(cls, app: JobSource, job_id: int) -> JobRef:
        """The handle of job `job_id` of `app` (an id you stored, or got back from a browser): Celery's
        AsyncResult(id). Reads the job's task name, so it raises JobNotFoundError at once for an id
        that never existed or whose job retention deleted."""
        _check_id(job_id)
        with app.database.pool().connection() as conn:
            return _found(app, job_id, app.store.job_get_task(conn, job_id))

    @classmethod
    async def afrom_id(cls, app: JobSource, job_id: int) -> JobRef:
        """Async twin of from_id()."""
        _check_id(job_id)
        pool = await app.database.apool()
        async with pool.connection() as conn:
            return _found(app, job_id, await app.store.ajob_get_task(conn, job_id))

    def state(self) -> str | None:
        """The job's current state, or None if it no longer exists (cleaned up)."""
        job = read_job(self.app, self.id)
        return None if job is None else str(job["state"])

    async def astate(self) -> str | None:
        """Async twin of state()."""
        pool = await self.app.database.apool()
        async with pool.connection() as conn:
            found = await self.app.store.ajob_get_outcome(conn, self.id)
        return None if found is None else found[0]

    def status(self) -> JobStatus:
        """The job's state and outcome now, without waiting (see JobStatus). Raises JobNotFoundError if
        the job does not exist, and ResultDecodeError if its stored result does not fit the task's
        return annotation."""
        with self.app.database.pool().connection() as conn:
            found = self.app.store.job_get_outcome(conn, self.id)
        return job_status(self.app.tasks, self.task, self.id, found)

    async def astatus(self) -> JobStatus:
        """Async twin of status(): `(await ref.astatus()).ready()` and so on, in async code."""
        pool = await self.app.database.apool()
        async with pool.connection() as conn:
            found = await self.app.store.ajob_get_outcome(conn, self.id)
        return job_status(self.app.tasks, self.task, self.id, found)

    def ready(self) -> bool:
        """The job finished (completed, cancelled or discarded); JobNotFoundError if it does not exist."""
        return self.status().ready()

    def successful(self) -> bool:
        """The job completed; False while it runs or waits, and when it failed."""
        return self.status().successful()

    def failed(self) -> bool:
        """The job ended cancelled or discarded; False while it runs or waits, and when it completed."""
        return self.status().failed()

    @property
    def result(self) -> Any:
        """Without waiting: the return value once completed, the JobFailedError once cancelled or
        discarded, None before the job finished (see JobStatus). Reads the database on each access."""
        return self.status().result

    @property
    def traceback(self) -> str | None:
        """Without waiting: the task's traceback once the job ended cancelled or discarded (None when
        none was recorded, as for an operator's cancel), None otherwise."""
        return self.status().traceback

    def forget(self) -> None:
        """Drop the finished job's stored result (Celery's forget()). The row stays, with its state
        and errors, until retention deletes it; afterwards `result` and wait() give None.

        Raises JobStateError for a job that has not finished (its result is still to come: give the
        task store_result=False to store none) and for a step of a workflow with steps still to run
        (a successor may read it), JobNotFoundError if the job does not exist.
        """
        with self.app.database.pool().connection() as conn:
            found = self.app.store.job_forget_result(conn, self.id)
        _forgotten(self.id, found)

    async def aforget(self) -> None:
        """Async twin of forget()."""
        pool = await self.app.database.apool()
        async with pool.connection() as conn:
            found = await self.app.store.ajob_forget_result(conn, self.id)
        _forgotten(self.id, found)

    def cancel(self, reason: str | None = None) -> CancelResult:
        """Cancel the job from application code, as `pgtasks jobs cancel` does (Celery's revoke()).

        A job that waits (available, scheduled, retryable, or a workflow's waiting step) ends
        cancelled at once: "cancelled". A running one is flagged and its worker is told on the
        control channel (and finds out at its next poll if that NOTIFY is lost): an async task is
        cancelled, a sync one sees `current_job().cancelled`; the job ends cancelled when its worker
        writes the outcome: "cancel_requested". A finished job is left as it is: "finished".
        `reason` goes into the job's error entry. JobNotFoundError if the job does not exist.
        """
        reason = _check_reason(reason)
        store = self.app.store
        with self.app.database.pool().connection() as conn:
            done = store.job_cancel_many(conn, [self.id], reason=reason, control=control_channel(store.schema))
            found = None if done else store.job_get_outcome(conn, self.id)
        return _cancel_result(self.id, done, found)

    async def acancel(self, reason: str | None = None) -> CancelResult:
        """Async twin of cancel()."""
        reason = _check_reason(reason)
        store = self.app.store
        pool = await self.app.database.apool()
        async with pool.connection() as conn:
            done = await store.ajob_cancel_many(conn, [self.id], reason=reason, control=control_channel(store.schema))
            found = None if done else await store.ajob_get_outcome(conn, self.id)
        return _cancel_result(self.id, done, found)

    def progress(self) -> JobProgress | None:
        """What the task last reported with `current_job().set_progress()`; None before any report
        (or if the job no longer exists). Stored at most twice a second, so it may lag the task a little."""
        with self.app.database.pool().connection() as conn:
            return decode_progress(self.app.store.job_get_progress(conn, self.id))

    async def aprogress(self) -> JobProgress | None:
        """Async twin of progress()."""
        pool = await self.app.database.apool()
        async with pool.connection() as conn:
            return decode_progress(await self.app.store.ajob_get_progress(conn, self.id))

    def wait(self, timeout: float | None = None, *, poll_interval: float = 1.0, listen: bool = True,
             propagate: bool = True) -> Any:
        """Block until the job is final and return its result, decoded to the task's return annotation.

        A job that ended discarded or cancelled raises pgtasks.JobDiscardedError / JobCancelledError
        carrying its last error; where this process can import the task's exception class, the
        error is an instance of that class too, so `except ValueError:` catches a task's ValueError
        (pgtasks.core.failures says when it can). `propagate=False` returns that error instead of
        raising it. pgtasks.WaitTimeoutError after `timeout` seconds and JobNotFoundError are raised
        either way. Wakes on the completion NOTIFY (listen=True) and polls every `poll_interval`.
        """
        return wait(self.app, self.task, self.id, timeout=timeout, poll_interval=poll_interval, listen=listen,
                    propagate=propagate)

    async def await_result(self, timeout: float | None = None, *, poll_interval: float = 1.0,
                           listen: bool = True, propagate: bool = True) -> Any:
        """Async twin of wait()."""
        return await await_result(self.app, self.task, self.id, timeout=timeout, poll_interval=poll_interval,
                                  listen=listen, propagate=propagate)


def _check_id(job_id: object) -> None:
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise ConfigurationError(f"job_id={job_id!r}: expected the job's integer id (JobRef.id); "
                                 "convert an id read from a URL or a form with int() first")


def _found(app: JobSource, job_id: int, task: str | None) -> JobRef:
    if task is None:
        raise JobNotFoundError(f"job {job_id} does not exist (never enqueued, or deleted by retention)")
    return JobRef(job_id, task, app)


def _check_reason(reason: object) -> str:
    if reason is None:
        return CANCEL_REASON
    if not isinstance(reason, str):
        raise ConfigurationError(f"reason={reason!r}: expected a str for the job's error entry, or None")
    return reason


def _cancel_result(job_id: int, done: dict[int, str], found: tuple[str, str | None, Any] | None) -> CancelResult:
    outcome = done.get(job_id)
    if outcome == "cancelled":
        return "cancelled"
    if outcome == "cancel_requested":
        return "cancel_requested"
    if found is None:
        raise JobNotFoundError(f"job {job_id} does not exist (never enqueued, or deleted by retention)")
    return "finished"


def _forgotten(job_id: int, found: tuple[str, int | None, bool] | None) -> None:
    if found is None:
        raise JobNotFoundError(f"job {job_id} does not exist (never enqueued, or deleted by retention)")
    state, workflow_id, dropped = found
    if dropped:
        return
    if state not in FINAL_STATES:
        raise JobStateError(f"job {job_id} is {state}: forget() drops the result of a finished job, and this one's "
                            "is still to come; forget it after wait(), or give the task store_result=False "
                            "to store none")
    raise JobStateError(f"job {job_id} is a step of workflow {workflow_id}, which has steps still to run: a "
                        f"successor may still read this result; forget it once `pgtasks workflows show "
                        f"{workflow_id}` says the workflow finished")


def read_job(source: JobSource, job_id: int) -> dict[str, Any] | None:
    """The job's row as a dict (args, errors and result as JSON text), or None."""
    with source.database.pool().connection() as conn:
        return source.store.job_get(conn, job_id)


def decode_progress(raw: str | None) -> JobProgress | None:
    """jobs.progress JSON text as a JobProgress."""
    return None if raw is None else msgspec.json.decode(raw, type=JobProgress)


@cache
def _return_type(func: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - unresolvable forward references: decode as plain JSON
        return Any
    return hints.get("return", Any)


def decode_result(tasks: Mapping[str, TaskDefinition[Any, Any]], task_name: str, job_id: int,
                  raw: str | None) -> Any:
    """Decode a stored result to the task's return annotation (plain JSON if the task is unknown here)."""
    if raw is None:
        return None
    task = tasks.get(task_name)
    target = _return_type(task.func) if task is not None else Any
    try:
        return msgspec.json.decode(raw, type=target)
    except msgspec.ValidationError as exc:
        raise ResultDecodeError(
            f"job {job_id} ({task_name}): stored result {raw[:80]!r} does not fit the return annotation "
            f"{target!r}: {exc}"
        ) from None


def job_status(tasks: Mapping[str, TaskDefinition[Any, Any]], task_name: str, job_id: int,
               found: tuple[str, str | None, Any] | None) -> JobStatus:
    """A JobStatus from job_get_outcome's (state, result JSON, last error entry); raises JobNotFoundError."""
    if found is None:
        raise JobNotFoundError(f"job {job_id} does not exist (never enqueued, or deleted by retention)")
    state, raw, last_error = found
    if state == JobState.COMPLETED:
        return JobStatus(job_id, task_name, state, decode_result(tasks, task_name, job_id, raw))
    if state not in FINAL_STATES:
        return JobStatus(job_id, task_name, state)
    error = failure_error(job_id, state, last_error if isinstance(last_error, dict) else None)
    return JobStatus(job_id, task_name, state, error, error)


def settle(tasks: Mapping[str, TaskDefinition[Any, Any]], task_name: str, job_id: int,
           found: tuple[str, str | None, Any] | None, *, propagate: bool = True) -> tuple[bool, Any]:
    """(True, value) when the job is final, else (False, None). A failed job's error is raised, or
    with propagate=False is the value."""
    status = job_status(tasks, task_name, job_id, found)
    if not status.ready():
        return False, None
    if status.error is not None and propagate:
        raise status.error
    return True, status.result


# -- the wait loop, written once (see pgtasks.storage.steps for the same idea) -----------------------
#
# A job and a workflow are waited for the same way: read, settle, and until settled pause (woken
# early by a completion NOTIFY of a watched job). What differs is what is read and how it settles:
# a Waited says it, and one generator plus one driver per face do the rest.


@dataclass(frozen=True, slots=True)
class Waited:
    """What a wait is for: the job ids whose completion NOTIFY wakes it, how to read its state on
    each face, how that state settles ((True, value), (False, None), or raises), and its name for
    errors ("job 5") with the command that shows it."""

    watched: frozenset[str]
    read: Callable[[Connection[Any]], Any]
    aread: Callable[[AsyncConnection[Any]], Awaitable[Any]]
    settle: Callable[[Any], tuple[bool, Any]]
    name: str
    show: str


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    """Read the awaited state; answered with it."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait up to `seconds` (for a watched completion NOTIFY when listening); answered with None."""

    seconds: float


WaitStep = ReadOutcome | Pause


def _wait_steps(waited: Waited, *, timeout: float | None, poll_interval: float) -> Generator[WaitStep, Any, Any]:
    """Look, and until settled, pause: the poll interval, cut to the time left."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done, value = waited.settle((yield ReadOutcome()))
        if done:
            return value
        pause = poll_interval
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(f"{waited.name} did not finish within {timeout}s; wait longer or check "
                                       f"`{waited.show}`")
            pause = min(poll_interval, remaining)
        yield Pause(pause)


def _lost(waited: Waited, exc: psycopg.OperationalError) -> DatabaseError:
    return DatabaseError(f"lost the connection while waiting for {waited.name}: {exc}")


def wait_for(source: JobSource, waited: Waited, *, timeout: float | None, poll_interval: float, listen: bool) -> Any:
    """Block until `waited` settles. LISTENs on the completion channel when it can; polls every
    `poll_interval` seconds in any case, so a lost notification (or a transaction pooler that
    delivers none) costs latency, never correctness."""
    database, store = source.database, source.store
    steps = _wait_steps(waited, timeout=timeout, poll_interval=poll_interval)
    with store.errors():
        conn: Connection[Any] = psycopg.connect(database.listen_dsn if listen else database.dsn,
                                                **connection_kwargs(database.application_name + "-waiter"))
    try:
        if listen:  # before the first read, so no completion slips between
            store.channel_listen(conn, done_channel(store.schema))
        step = next(steps)
        while True:
            if isinstance(step, ReadOutcome):
                step = steps.send(waited.read(conn))
                continue
            if listen:
                try:
                    for notify in conn.notifies(timeout=step.seconds):
                        if notify.payload in waited.watched:
                            break
                except psycopg.OperationalError as exc:
                    raise _lost(waited, exc) from exc
            else:
                time.sleep(step.seconds)
            step = steps.send(None)
    except StopIteration as done:
        return done.value
    finally:
        conn.close()


async def await_for(source: JobSource, waited: Waited, *, timeout: float | None, poll_interval: float,
                    listen: bool) -> Any:
    """Async twin of wait_for()."""
    database, store = source.database, source.store
    steps = _wait_steps(waited, timeout=timeout, poll_interval=poll_interval)
    dsn = await asyncio.to_thread(lambda: database.listen_dsn if listen else database.dsn)
    with store.errors():
        conn = await AsyncConnection.connect(dsn, **connection_kwargs(database.application_name + "-waiter"))
    try:
        if listen:
            await store.achannel_listen(conn, done_channel(store.schema))
        step = next(steps)
        while True:
            if isinstance(step, ReadOutcome):
                step = steps.send(await waited.aread(conn))
                continue
            if listen:
                try:
                    async for notify in conn.notifies(timeout=step.seconds):
                        if notify.payload in waited.watched:
                            break
                except psycopg.OperationalError as exc:
                    raise _lost(waited, exc) from exc
            else:
                await asyncio.sleep(step.seconds)
            step = steps.send(None)
    except StopIteration as done:
        return done.value
    finally:
        await conn.close()


def job_waited(source: JobSource, task_name: str, job_id: int, *, propagate: bool = True) -> Waited:
    """The wait for one job's outcome."""
    store = source.store
    return Waited(frozenset({str(job_id)}), lambda conn: store.job_get_outcome(conn, job_id),
                  lambda conn: store.ajob_get_outcome(conn, job_id),
                  lambda found: settle(source.tasks, task_name, job_id, found, propagate=propagate),
                  f"job {job_id}", f"pgtasks jobs show {job_id}")


def wait(source: JobSource, task_name: str, job_id: int, *, timeout: float | None, poll_interval: float,
         listen: bool, propagate: bool = True) -> Any:
    """Block until the job is final (see wait_for)."""
    return wait_for(source, job_waited(source, task_name, job_id, propagate=propagate), timeout=timeout,
                    poll_interval=poll_interval, listen=listen)


async def await_result(source: JobSource, task_name: str, job_id: int, *, timeout: float | None,
                       poll_interval: float, listen: bool, propagate: bool = True) -> Any:
    """Async twin of wait()."""
    return await await_for(source, job_waited(source, task_name, job_id, propagate=propagate), timeout=timeout,
                           poll_interval=poll_interval, listen=listen)
