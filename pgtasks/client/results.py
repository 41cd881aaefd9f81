"""Waiting for a job's outcome: JobRef.wait() / await_result(), LISTEN on completions with a polling net."""

from __future__ import annotations

import asyncio
import time
import typing
from functools import cache
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg
from psycopg import AsyncConnection, Connection

from pgtasks.core.channels import done_channel
from pgtasks.core.errors import (
    DatabaseError,
    JobCancelledError,
    JobDiscardedError,
    JobNotFoundError,
    ResultDecodeError,
    WaitTimeoutError,
)
from pgtasks.storage.connections import connection_kwargs

if TYPE_CHECKING:
    from collections.abc import Callable

    from pgtasks.app import App

FINAL = frozenset({"completed", "cancelled", "discarded"})


@cache
def _return_type(func: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - unresolvable forward references: decode as plain JSON
        return Any
    return hints.get("return", Any)


def decode_result(app: App, task_name: str, job_id: int, raw: str | None) -> Any:
    """Decode a stored result to the task's return annotation (plain JSON if the task is unknown here)."""
    if raw is None:
        return None
    task = app.tasks.get(task_name)
    target = _return_type(task.func) if task is not None else Any
    try:
        return msgspec.json.decode(raw, type=target)
    except msgspec.ValidationError as exc:
        raise ResultDecodeError(
            f"job {job_id} ({task_name}): stored result {raw[:80]!r} does not fit the return annotation "
            f"{target!r}: {exc}"
        ) from None


def settle(app: App, task_name: str, job_id: int, found: tuple[str, str | None, Any] | None) -> tuple[bool, Any]:
    """(True, value) when the job is final (raising for discarded/cancelled), else (False, None)."""
    if found is None:
        raise JobNotFoundError(f"job {job_id} does not exist (never enqueued, or deleted by retention)")
    state, raw, last_error = found
    if state not in FINAL:
        return False, None
    if state == "completed":
        return True, decode_result(app, task_name, job_id, raw)
    error = last_error if isinstance(last_error, dict) else {}
    cls = JobCancelledError if state == "cancelled" else JobDiscardedError
    raise cls(job_id, state, error.get("type"), error.get("message"), error.get("traceback"))


def _next_pause(deadline: float | None, poll_interval: float, job_id: int, timeout: float | None) -> float:
    """How long to wait before looking again: the poll interval, cut to the time left; raises once it is up."""
    if deadline is None:
        return poll_interval
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise WaitTimeoutError(f"job {job_id} did not finish within {timeout}s; wait longer or check "
                               f"`pgtasks jobs show {job_id}`")
    return min(poll_interval, remaining)


def wait(app: App, task_name: str, job_id: int, *, timeout: float | None, poll_interval: float,
         listen: bool) -> Any:
    """Block until the job is final. LISTENs on the completion channel when it can; polls every
    `poll_interval` seconds in any case, so a lost notification (or a transaction pooler that
    delivers none) costs latency, never correctness."""
    deadline = None if timeout is None else time.monotonic() + timeout
    channel = done_channel(app.schema)
    dsn = app.listen_dsn if listen else app.dsn
    with app.store.errors():
        conn: Connection[Any] = psycopg.connect(dsn, **connection_kwargs(app.application_name + "-waiter"))
    try:
        if listen:
            app.store.listen(conn, channel)  # before the first read, so no completion slips between
        while True:
            done, value = settle(app, task_name, job_id, app.store.job_get_outcome(conn, job_id))
            if done:
                return value
            pause = _next_pause(deadline, poll_interval, job_id, timeout)
            if listen:
                try:
                    for notify in conn.notifies(timeout=pause):
                        if notify.payload == str(job_id):
                            break
                except psycopg.OperationalError as exc:
                    raise DatabaseError(f"lost the connection while waiting for job {job_id}: {exc}") from exc
            else:
                time.sleep(pause)
    finally:
        conn.close()


async def await_result(app: App, task_name: str, job_id: int, *, timeout: float | None, poll_interval: float,
                       listen: bool) -> Any:
    """Async twin of wait()."""
    deadline = None if timeout is None else time.monotonic() + timeout
    channel = done_channel(app.schema)
    dsn = await asyncio.to_thread(lambda: app.listen_dsn if listen else app.dsn)
    with app.store.errors():
        conn = await AsyncConnection.connect(dsn, **connection_kwargs(app.application_name + "-waiter"))
    try:
        if listen:
            await app.store.alisten(conn, channel)
        while True:
            done, value = settle(app, task_name, job_id, await app.store.ajob_get_outcome(conn, job_id))
            if done:
                return value
            pause = _next_pause(deadline, poll_interval, job_id, timeout)
            if listen:
                try:
                    async for notify in conn.notifies(timeout=pause):
                        if notify.payload == str(job_id):
                            break
                except psycopg.OperationalError as exc:
                    raise DatabaseError(f"lost the connection while waiting for job {job_id}: {exc}") from exc
            else:
                await asyncio.sleep(pause)
    finally:
        await conn.close()
