"""Job handles and their results: JobRef, and waiting for an outcome (LISTEN on completions, polling as the net)."""

from __future__ import annotations

import asyncio
import time
import typing
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

import msgspec
import psycopg
from psycopg import AsyncConnection, Connection

from pgtasks.core.channels import done_channel
from pgtasks.core.context import JobProgress
from pgtasks.core.definition import TaskDefinition
from pgtasks.core.errors import (
    DatabaseError,
    JobCancelledError,
    JobDiscardedError,
    JobNotFoundError,
    ResultDecodeError,
    WaitTimeoutError,
)
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


@dataclass(frozen=True, slots=True)
class JobRef:
    """A handle on an enqueued job."""

    id: int
    task: str
    app: JobSource = field(repr=False, compare=False)

    def state(self) -> str | None:
        """The job's current state, or None if it no longer exists (cleaned up)."""
        job = read_job(self.app, self.id)
        return None if job is None else str(job["state"])

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

    def wait(self, timeout: float | None = None, *, poll_interval: float = 1.0, listen: bool = True) -> Any:
        """Block until the job is final and return its result, decoded to the task's return annotation.

        Raises pgtasks.JobDiscardedError / JobCancelledError (with the task's exception type and
        message) if it ended without a result, and pgtasks.WaitTimeoutError after `timeout`
        seconds. Wakes on the completion NOTIFY (listen=True) and polls every `poll_interval`.
        """
        return wait(self.app, self.task, self.id, timeout=timeout, poll_interval=poll_interval, listen=listen)

    async def await_result(self, timeout: float | None = None, *, poll_interval: float = 1.0,
                           listen: bool = True) -> Any:
        """Async twin of wait()."""
        return await await_result(self.app, self.task, self.id, timeout=timeout, poll_interval=poll_interval,
                                  listen=listen)


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


def settle(tasks: Mapping[str, TaskDefinition[Any, Any]], task_name: str, job_id: int,
           found: tuple[str, str | None, Any] | None) -> tuple[bool, Any]:
    """(True, value) when the job is final (raising for discarded/cancelled), else (False, None)."""
    if found is None:
        raise JobNotFoundError(f"job {job_id} does not exist (never enqueued, or deleted by retention)")
    state, raw, last_error = found
    if state not in FINAL_STATES:
        return False, None
    if state == JobState.COMPLETED:
        return True, decode_result(tasks, task_name, job_id, raw)
    error = last_error if isinstance(last_error, dict) else {}
    cls = JobCancelledError if state == JobState.CANCELLED else JobDiscardedError
    raise cls(job_id, state, error.get("type"), error.get("message"), error.get("traceback"))


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


def job_waited(source: JobSource, task_name: str, job_id: int) -> Waited:
    """The wait for one job's outcome."""
    store = source.store
    return Waited(frozenset({str(job_id)}), lambda conn: store.job_get_outcome(conn, job_id),
                  lambda conn: store.ajob_get_outcome(conn, job_id),
                  lambda found: settle(source.tasks, task_name, job_id, found),
                  f"job {job_id}", f"pgtasks jobs show {job_id}")


def wait(source: JobSource, task_name: str, job_id: int, *, timeout: float | None, poll_interval: float,
         listen: bool) -> Any:
    """Block until the job is final (see wait_for)."""
    return wait_for(source, job_waited(source, task_name, job_id), timeout=timeout, poll_interval=poll_interval,
                    listen=listen)


async def await_result(source: JobSource, task_name: str, job_id: int, *, timeout: float | None,
                       poll_interval: float, listen: bool) -> Any:
    """Async twin of wait()."""
    return await await_for(source, job_waited(source, task_name, job_id), timeout=timeout,
                           poll_interval=poll_interval, listen=listen)
