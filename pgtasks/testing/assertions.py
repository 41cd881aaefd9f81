"""assert_enqueued / refute_enqueued: check the jobs table for a task's jobs by (part of) their arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import Connection

from pgtasks.app import App
from pgtasks.client.task import Task
from pgtasks.core.models import PENDING_STATES

PENDING = tuple(str(state) for state in PENDING_STATES)
_ENCODER = msgspec.json.Encoder()


def enqueued_jobs(task: Task[Any, Any], *, queue: str | None = None, states: Sequence[str] = PENDING,
                  connection: Connection[Any] | None = None, **args: Any) -> list[dict[str, Any]]:
    """The task's jobs whose stored arguments include `args` (by parameter name), oldest first.

    Values are encoded as .delay() encodes them, so a datetime, UUID or Struct matches its stored
    JSON. Reads through `connection`, else the app's bound connection (so jobs enqueued in a
    transaction that has not committed yet are seen), else a pooled one.
    """
    app = task.app
    if not isinstance(app, App):
        raise TypeError(f"{task.name} is not registered on a pgtasks.App")
    unknown = [name for name in args if name not in task.codec.signature.parameters]
    if unknown:
        raise TypeError(f"{task.name} has no parameter(s) {unknown}; its parameters are "
                        f"{list(task.codec.signature.parameters)}")
    args_json = _ENCODER.encode(args).decode()
    conn = connection if connection is not None else app.binding.current()
    if isinstance(conn, Connection):
        return app.store.job_find_enqueued(conn, task=task.name, args_json=args_json, states=states, queue=queue)
    with app.database.pool().connection() as pooled:
        return app.store.job_find_enqueued(pooled, task=task.name, args_json=args_json, states=states, queue=queue)


def _describe(task: Task[Any, Any], queue: str | None, states: Sequence[str], args: dict[str, Any]) -> str:
    where = f" on queue {queue!r}" if queue else ""
    return f"{task.name}({', '.join(f'{k}={v!r}' for k, v in args.items())}){where} in states {list(states)}"


def assert_enqueued(task: Task[Any, Any], *, queue: str | None = None, states: Sequence[str] = PENDING,
                    count: int | None = None, connection: Connection[Any] | None = None,
                    **args: Any) -> list[dict[str, Any]]:
    """Fail unless a job of `task` with these arguments is pending (exactly `count` of them if given).

    Returns the matching rows (id, queue, state, args). The failure message lists what the task
    does have enqueued, which is usually the quickest way to see why it did not match.
    """
    found = enqueued_jobs(task, queue=queue, states=states, connection=connection, **args)
    if (count is None and found) or (count is not None and len(found) == count):
        return found
    others = enqueued_jobs(task, states=states, connection=connection)
    seen = "; ".join(f"#{r['id']} {r['state']} queue={r['queue']} args={r['args']}" for r in others[:5]) or "none"
    expected = f"{count} job(s)" if count is not None else "a job"
    raise AssertionError(f"expected {expected} {_describe(task, queue, states, args)}, found {len(found)}. "
                         f"Jobs of {task.name} in those states: {seen}")


def refute_enqueued(task: Task[Any, Any], *, queue: str | None = None, states: Sequence[str] = PENDING,
                    connection: Connection[Any] | None = None, **args: Any) -> None:
    """Fail if any job of `task` with these arguments is pending."""
    found = enqueued_jobs(task, queue=queue, states=states, connection=connection, **args)
    if found:
        ids = ", ".join(f"#{r['id']}" for r in found[:10])
        raise AssertionError(f"expected no job {_describe(task, queue, states, args)}, found {len(found)}: {ids}")
