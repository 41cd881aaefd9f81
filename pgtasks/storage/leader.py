"""Queries of leader.sql: the one lease row leader election runs on."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, LiteralString

from psycopg import AsyncConnection, Connection

from pgtasks.core.models import LeaderLease
from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, one


def _lease(q: Mapping[str, LiteralString], name: str, params: dict[str, Any]) -> Operation[LeaderLease | None]:
    row = yield one(q[name], params)
    return None if row is None else LeaderLease(*row)


def _row_exists(query: LiteralString, params: dict[str, Any]) -> Operation[bool]:
    return (yield one(query, params)) is not None


class LeaderStore(StoreBase):
    async def aleader_attempt_elect(self, conn: AsyncConnection[Any], *, leader_id: str, ttl: float,
                                    now: datetime | None = None) -> LeaderLease | None:
        """Take the lease if it is free or expired; None while another process holds it."""
        params = {"leader_id": leader_id, "ttl": ttl, "now": now}
        return await self.arun(conn, _lease(self.queries, "leader_attempt_elect", params))

    async def aleader_attempt_reelect(self, conn: AsyncConnection[Any], *, leader_id: str, term: int, ttl: float,
                                      now: datetime | None = None) -> LeaderLease | None:
        """Renew our lease of `term`; None once another process has been elected."""
        params = {"leader_id": leader_id, "term": term, "ttl": ttl, "now": now}
        return await self.arun(conn, _lease(self.queries, "leader_attempt_reelect", params))

    async def aleader_resign(self, conn: AsyncConnection[Any], *, leader_id: str, term: int | None, channel: str,
                             now: datetime | None = None) -> bool:
        """Expire our lease of `term` (None: any unexpired lease of `leader_id`) now and notify `channel`;
        False if there was none."""
        params = {"leader_id": leader_id, "term": term, "channel": channel, "now": now}
        return await self.arun(conn, _row_exists(self.queries["leader_resign"], params))

    def leader_get(self, conn: Connection[Any], now: datetime | None = None) -> LeaderLease | None:
        return self.run(conn, _lease(self.queries, "leader_get", {"now": now}))
