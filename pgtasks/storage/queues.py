"""Queries of queues.sql: pause, resume and remove, per-queue depth and lag, counts by state, task names."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, LiteralString, NamedTuple

from psycopg import Connection

from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, every, execute, one, select_dicts

Queries = Mapping[str, LiteralString]


class QueueRemoval(NamedTuple):
    """What `queue_remove` did: `removed`; `absent` (no entry by that name); `refused`, because
    the queue is paused with `waiting` jobs that removing its entry would resume; or `limited`,
    refused because a limit applies in the queue (its own, or a task's: the entry is the lock
    their claim takes)."""

    outcome: Literal["removed", "absent", "refused", "limited"]
    waiting: int


def _pause(q: Queries, name: str, now: datetime | None) -> Operation[datetime]:
    row = yield one(q["queue_pause"], {"name": name, "now": now})
    if row is None:  # INSERT ... ON CONFLICT DO UPDATE always returns the row
        raise AssertionError("queue_pause returned no row")
    paused_at: datetime = row[0]
    return paused_at


def _resume(q: Queries, name: str, channel: str, now: datetime | None) -> Operation[bool]:
    row = yield one(q["queue_resume"], {"name": name, "now": now})
    yield execute(q["notify_send"], {"channel": channel, "payloads": [name]})
    return bool(row and row[0])


def _remove(q: Queries, name: str) -> Operation[QueueRemoval]:
    # One transaction: the entry stays locked between the check and the delete, so a concurrent
    # pause or resume cannot slip in between.
    row = yield one(q["queue_entry_for_removal"], {"name": name})
    if row is None:
        return QueueRemoval("absent", 0)
    paused_at, waiting, limited = row
    if paused_at is not None and waiting:
        return QueueRemoval("refused", int(waiting))
    if limited:
        return QueueRemoval("limited", int(waiting))
    yield execute(q["queue_remove"], {"name": name})
    return QueueRemoval("removed", int(waiting))


def _task_names(q: Queries) -> Operation[list[str]]:
    return [str(r[0]) for r in (yield every(q["job_task_names"]))]


def _paused(q: Queries) -> Operation[dict[str, datetime]]:
    return {str(r[0]): r[1] for r in (yield every(q["queue_list_paused"]))}


def _by_state(q: Queries) -> Operation[dict[str, int]]:
    return {str(r[0]): int(r[1]) for r in (yield every(q["stats_by_state"]))}


class QueueStore(StoreBase):
    def queue_pause(self, conn: Connection[Any], name: str, now: datetime | None = None) -> datetime:
        return self.run(conn, _pause(self.queries, name, now))

    def queue_resume(self, conn: Connection[Any], name: str, *, channel: str, now: datetime | None = None) -> bool:
        """Unpause; True if it was paused. Wakes the queue's workers in the same transaction."""
        return self.run(conn, _resume(self.queries, name, channel, now), transaction=True)

    def queue_remove(self, conn: Connection[Any], name: str) -> QueueRemoval:
        """Delete queue `name`'s entry unless it is paused with jobs waiting (see QueueRemoval)."""
        return self.run(conn, _remove(self.queries, name), transaction=True)

    def job_task_names(self, conn: Connection[Any]) -> list[str]:
        """The distinct task names of all jobs (a full read of the task column)."""
        return self.run(conn, _task_names(self.queries))

    def queue_list_paused(self, conn: Connection[Any]) -> dict[str, datetime]:
        return self.run(conn, _paused(self.queries))

    def queue_stats(self, conn: Connection[Any], now: datetime | None = None) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["queue_stats"], {"now": now}))

    def stats_by_state(self, conn: Connection[Any]) -> dict[str, int]:
        return self.run(conn, _by_state(self.queries))

    def stats_recent_by_task(self, conn: Connection[Any], seconds: float,
                             now: datetime | None = None) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["stats_recent_by_task"], {"seconds": seconds, "now": now}))
