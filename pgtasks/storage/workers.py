"""Queries of workers.sql: each worker's heartbeat row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, LiteralString

from psycopg import AsyncConnection, Connection

from pgtasks.core.models import WorkerInfo
from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, every, select_dicts, statement


def _list(query: LiteralString, now: datetime | None) -> Operation[list[WorkerInfo]]:
    return [WorkerInfo(*row) for row in (yield every(query, {"now": now}))]


class WorkerStore(StoreBase):
    async def aworker_heartbeat(self, conn: AsyncConnection[Any], *, worker_id: str, hostname: str, pid: int,
                                queues: Sequence[str], concurrency: int, running: Sequence[int],
                                now: datetime | None = None, supervisor: str | None = None,
                                tasks: Sequence[str] | None = None) -> None:
        params = {"worker_id": worker_id, "hostname": hostname, "pid": pid, "queues": list(queues),
                  "concurrency": concurrency, "running": list(running), "now": now, "supervisor": supervisor,
                  "tasks": None if tasks is None else list(tasks)}
        await self.arun(conn, statement(self.queries["worker_heartbeat"], params))

    async def aworker_delete(self, conn: AsyncConnection[Any], worker_id: str) -> None:
        await self.arun(conn, statement(self.queries["worker_delete"], {"worker_id": worker_id}))

    def worker_list(self, conn: Connection[Any], now: datetime | None = None) -> list[WorkerInfo]:
        return self.run(conn, _list(self.queries["worker_list"], now))

    def worker_status(self, conn: Connection[Any], *, silent_after: float, include_silent: bool = False,
                      now: datetime | None = None) -> list[dict[str, Any]]:
        """Workers seen within `silent_after` seconds (all rows with include_silent), with the jobs
        each holds now (id, task, queue, attempt, running_s), whether it leads, and its supervisor
        ("host:pid", or None for a worker started on its own)."""
        params = {"silent_after": silent_after, "all": include_silent, "now": now}
        return self.run(conn, select_dicts(self.queries["worker_status"], params))
