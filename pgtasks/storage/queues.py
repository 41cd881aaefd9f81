"""Queries of queues.sql: pause and resume, per-queue depth and lag, counts by state."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, LiteralString

from psycopg import Connection

from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, every, execute, one, select_dicts

Queries = Mapping[str, LiteralString]


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

    def queue_list_paused(self, conn: Connection[Any]) -> dict[str, datetime]:
        return self.run(conn, _paused(self.queries))

    def queue_stats(self, conn: Connection[Any], now: datetime | None = None) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["queue_stats"], {"now": now}))

    def stats_by_state(self, conn: Connection[Any]) -> dict[str, int]:
        return self.run(conn, _by_state(self.queries))

    def stats_recent_by_task(self, conn: Connection[Any], seconds: float,
                             now: datetime | None = None) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["stats_recent_by_task"], {"seconds": seconds, "now": now}))
