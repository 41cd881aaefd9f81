"""Queries of ops.sql: job administration (list, retry, cancel, purge), enqueue checks, NOTIFY."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, LiteralString

from psycopg import AsyncConnection, Connection

from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, count_affected, every, execute, one, select_dicts, statement

Queries = Mapping[str, LiteralString]


def _opt(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values else None


def retry_many(q: Queries, params: dict[str, Any], channel: str) -> Operation[list[int]]:
    """Retry one batch, and wake the workers of the affected queues in the same transaction."""
    rows = yield every(q["job_retry_many"], params)
    woken = sorted({str(r[1]) for r in rows})
    if woken:
        yield execute(q["notify_send"], {"channel": channel, "payloads": woken})
    return [int(r[0]) for r in rows]


def cancel_many(q: Queries, params: dict[str, Any], control: str) -> Operation[dict[int, str]]:
    """Cancel jobs; running ones get a request, announced on the control channel in the same transaction."""
    rows = yield every(q["job_cancel_many"], params)
    requested = [str(r[0]) for r in rows if r[1] == "cancel_requested"]
    if requested:
        yield execute(q["notify_send"], {"channel": control, "payloads": requested})
    return {int(r[0]): str(r[1]) for r in rows}


def forget_result(q: Queries, job_id: int) -> Operation[tuple[str, int | None, bool] | None]:
    row = yield one(q["job_forget_result"], {"id": job_id})
    return None if row is None else (str(row[0]), None if row[1] is None else int(row[1]), bool(row[2]))


def _count(query: LiteralString, params: dict[str, Any]) -> Operation[int]:
    row = yield one(query, params)
    return int(row[0]) if row else 0


def _ids(query: LiteralString, params: dict[str, Any]) -> Operation[set[int]]:
    return {int(r[0]) for r in (yield every(query, params))}


def _purged(query: LiteralString, params: dict[str, Any]) -> Operation[int]:
    return len((yield every(query, params)))


class OperationsStore(StoreBase):
    def job_list(self, conn: Connection[Any], *, states: Sequence[str] | None = None,
                 queues: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
        params = {"states": _opt(states), "queues": _opt(queues), "tasks": _opt(tasks), "limit": limit}
        return self.run(conn, select_dicts(self.queries["job_list"], params))

    def job_detail(self, conn: Connection[Any], job_id: int) -> dict[str, Any] | None:
        rows = self.run(conn, select_dicts(self.queries["job_detail"], {"id": job_id}))
        return rows[0] if rows else None

    def job_make_due(self, conn: Connection[Any], queues: Sequence[str]) -> int:
        """Testing: make scheduled jobs and retries of `queues` runnable now; how many were moved."""
        return self.run(conn, count_affected(self.queries["job_make_due"], {"queues": list(queues)}))

    def job_count_filtered(self, conn: Connection[Any], *, states: Sequence[str],
                           queues: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                           older_than: float | None = None, now: datetime | None = None) -> int:
        """How many jobs in `states` (and the other filters) there are: what a bulk retry looks at."""
        params = {"states": list(states), "queues": _opt(queues), "tasks": _opt(tasks),
                  "older_than": older_than, "now": now}
        return self.run(conn, _count(self.queries["job_count_filtered"], params))

    def job_count_purgeable(self, conn: Connection[Any], *, states: Sequence[str],
                            queues: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                            older_than: float | None = None, now: datetime | None = None) -> int:
        """How many jobs job_purge_many would delete with the same filters."""
        params = {"states": list(states), "queues": _opt(queues), "tasks": _opt(tasks),
                  "older_than": older_than, "now": now}
        return self.run(conn, _count(self.queries["job_count_purgeable"], params))

    def job_retry_many(self, conn: Connection[Any], *, ids: Sequence[int] | None = None,
                       states: Sequence[str] | None = None, queues: Sequence[str] | None = None,
                       tasks: Sequence[str] | None = None, limit: int = 1000, channel: str,
                       now: datetime | None = None) -> list[int]:
        params = {"ids": list(ids) if ids is not None else None, "states": _opt(states),
                  "queues": _opt(queues), "tasks": _opt(tasks), "limit": limit, "now": now}
        return self.run(conn, retry_many(self.queries, params, channel), transaction=True)

    def job_cancel_many(self, conn: Connection[Any], ids: Sequence[int], *, reason: str, control: str,
                        now: datetime | None = None) -> dict[int, str]:
        """Cancel jobs; returns {id: 'cancelled' | 'cancel_requested'} for the ids that were unfinished."""
        params = {"ids": list(ids), "reason": reason, "now": now}
        return self.run(conn, cancel_many(self.queries, params, control), transaction=True)

    async def ajob_cancel_many(self, conn: AsyncConnection[Any], ids: Sequence[int], *, reason: str, control: str,
                               now: datetime | None = None) -> dict[int, str]:
        """Async twin of job_cancel_many()."""
        params = {"ids": list(ids), "reason": reason, "now": now}
        return await self.arun(conn, cancel_many(self.queries, params, control), transaction=True)

    def job_forget_result(self, conn: Connection[Any], job_id: int) -> tuple[str, int | None, bool] | None:
        """Drop a finished job's result: (state, workflow_id, dropped); None if no such job."""
        return self.run(conn, forget_result(self.queries, job_id))

    async def ajob_forget_result(self, conn: AsyncConnection[Any], job_id: int) -> tuple[str, int | None, bool] | None:
        return await self.arun(conn, forget_result(self.queries, job_id))

    async def ajob_list_cancel_requested(self, conn: AsyncConnection[Any], ids: Sequence[int]) -> set[int]:
        return await self.arun(conn, _ids(self.queries["job_list_cancel_requested"], {"ids": list(ids)}))

    def job_purge_many(self, conn: Connection[Any], *, states: Sequence[str], queues: Sequence[str] | None = None,
                       tasks: Sequence[str] | None = None, older_than: float | None = None, limit: int = 1000,
                       now: datetime | None = None) -> int:
        params = {"states": list(states), "queues": _opt(queues), "tasks": _opt(tasks),
                  "older_than": older_than, "limit": limit, "now": now}
        return self.run(conn, _purged(self.queries["job_purge_many"], params))

    def job_find_enqueued(self, conn: Connection[Any], *, task: str, args_json: str, states: Sequence[str],
                          queue: str | None = None) -> list[dict[str, Any]]:
        params = {"task": task, "args": args_json, "states": list(states), "queue": queue}
        return self.run(conn, select_dicts(self.queries["job_find_enqueued"], params))

    def notify_send(self, conn: Connection[Any], channel: str, payloads: Sequence[str]) -> None:
        self.run(conn, statement(self.queries["notify_send"], {"channel": channel, "payloads": list(payloads)}))
