"""Queries of maintenance.sql: the leader's rescuer and cleaner."""

from __future__ import annotations

from datetime import datetime
from typing import Any, LiteralString

from psycopg import AsyncConnection

from pgtasks.core.models import RescuedJob
from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, count_affected, every


def _rescue(query: LiteralString, params: dict[str, Any]) -> Operation[list[RescuedJob]]:
    return [RescuedJob(*row[:5]) for row in (yield every(query, params))]


class MaintenanceStore(StoreBase):
    async def ajob_rescue_stuck(self, conn: AsyncConnection[Any], *, rescue_after: float, limit: int,
                                now: datetime | None = None) -> list[RescuedJob]:
        params = {"rescue_after": rescue_after, "limit": limit, "now": now}
        return await self.arun(conn, _rescue(self.queries["job_rescue_stuck"], params))

    async def ajob_delete_finished(self, conn: AsyncConnection[Any], *, state: str, retention: float, limit: int,
                                   now: datetime | None = None) -> int:
        """Delete one batch of `state` jobs finalized more than `retention` seconds ago; returns the count."""
        params = {"state": state, "retention": retention, "limit": limit, "now": now}
        return await self.arun(conn, count_affected(self.queries["job_delete_finished"], params))

    async def aperiodic_fire_prune(self, conn: AsyncConnection[Any], *, retention: float, limit: int,
                                   now: datetime | None = None) -> int:
        params = {"retention": retention, "limit": limit, "now": now}
        return await self.arun(conn, count_affected(self.queries["periodic_fire_prune"], params))

    async def aworker_prune_dead(self, conn: AsyncConnection[Any], *, retention: float, limit: int,
                                 now: datetime | None = None) -> int:
        params = {"retention": retention, "limit": limit, "now": now}
        return await self.arun(conn, count_affected(self.queries["worker_prune_dead"], params))

    async def akey_bucket_prune(self, conn: AsyncConnection[Any], *, limit: int, now: datetime | None = None) -> int:
        """Delete one batch of per-key token buckets that are full again or whose task lost its per-key rate."""
        params = {"limit": limit, "now": now}
        return await self.arun(conn, count_affected(self.queries["key_bucket_prune"], params))
