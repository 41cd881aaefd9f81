"""Store methods for operations: job admin (list/retry/cancel/purge), queues, stats, results, doctor.

Mixed into pgtasks.storage.store.Store, so they are called as `app.store.queue_pause(...)` like the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, LiteralString

from psycopg import AsyncConnection, Connection, sql
from psycopg.rows import dict_row


def _opt(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values else None


class OpsStoreMixin:
    """Named queries from ops.sql, queues.sql and doctor.sql."""

    q: dict[str, LiteralString]

    def errors(self) -> contextlib.AbstractContextManager[None]:  # provided by Store
        raise NotImplementedError

    def _dicts(self, conn: Connection[Any], name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self.errors():
            cur = conn.cursor(row_factory=dict_row)
            return cur.execute(self.q[name], params).fetchall()

    # -- jobs -------------------------------------------------------------------------------------

    def job_list(self, conn: Connection[Any], *, states: Sequence[str] | None = None,
                 queues: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
        return self._dicts(conn, "job_list", {"states": _opt(states), "queues": _opt(queues),
                                              "tasks": _opt(tasks), "limit": limit})

    def job_detail(self, conn: Connection[Any], job_id: int) -> dict[str, Any] | None:
        rows = self._dicts(conn, "job_detail", {"id": job_id})
        return rows[0] if rows else None

    def job_get_outcome(self, conn: Connection[Any], job_id: int) -> tuple[str, str | None, Any] | None:
        with self.errors():
            row = conn.execute(self.q["job_get_outcome"], {"id": job_id}).fetchone()
        return None if row is None else (str(row[0]), row[1], row[2])

    async def ajob_get_outcome(self, conn: AsyncConnection[Any], job_id: int) -> tuple[str, str | None, Any] | None:
        with self.errors():
            cur = await conn.execute(self.q["job_get_outcome"], {"id": job_id})
            row = await cur.fetchone()
        return None if row is None else (str(row[0]), row[1], row[2])

    def job_make_due(self, conn: Connection[Any], queues: Sequence[str]) -> int:
        """Testing: make scheduled jobs and retries of `queues` runnable now; how many were moved."""
        with self.errors():
            return conn.execute(self.q["job_make_due"], {"queues": list(queues)}).rowcount

    def job_count_filtered(self, conn: Connection[Any], *, states: Sequence[str],
                           queues: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                           older_than: float | None = None, now: datetime | None = None) -> int:
        params = {"states": list(states), "queues": _opt(queues), "tasks": _opt(tasks),
                  "older_than": older_than, "now": now}
        with self.errors():
            row = conn.execute(self.q["job_count_filtered"], params).fetchone()
        return int(row[0]) if row else 0

    def job_retry_many(self, conn: Connection[Any], *, ids: Sequence[int] | None = None,
                       states: Sequence[str] | None = None, queues: Sequence[str] | None = None,
                       tasks: Sequence[str] | None = None, limit: int = 1000, channel: str,
                       now: datetime | None = None) -> list[int]:
        """Retry one batch; wakes the workers of the affected queues in the same transaction."""
        params = {"ids": list(ids) if ids is not None else None, "states": _opt(states),
                  "queues": _opt(queues), "tasks": _opt(tasks), "limit": limit, "now": now}
        with self.errors(), conn.transaction():
            rows = conn.execute(self.q["job_retry_many"], params).fetchall()
            woken = sorted({str(r[1]) for r in rows})
            if woken:
                conn.execute(self.q["notify_send"], {"channel": channel, "payloads": woken})
        return [int(r[0]) for r in rows]

    def job_cancel_many(self, conn: Connection[Any], ids: Sequence[int], *, reason: str, control: str,
                        now: datetime | None = None) -> dict[int, str]:
        """Cancel jobs; returns {id: 'cancelled' | 'cancel_requested'} for the ids that were unfinished."""
        with self.errors(), conn.transaction():
            rows = conn.execute(self.q["job_cancel_many"],
                                {"ids": list(ids), "reason": reason, "now": now}).fetchall()
            requested = [str(r[0]) for r in rows if r[1] == "cancel_requested"]
            if requested:
                conn.execute(self.q["notify_send"], {"channel": control, "payloads": requested})
        return {int(r[0]): str(r[1]) for r in rows}

    async def ajob_list_cancel_requested(self, conn: AsyncConnection[Any], ids: Sequence[int]) -> set[int]:
        with self.errors():
            cur = await conn.execute(self.q["job_list_cancel_requested"], {"ids": list(ids)})
            return {int(r[0]) for r in await cur.fetchall()}

    def job_purge_many(self, conn: Connection[Any], *, states: Sequence[str], queues: Sequence[str] | None = None,
                       tasks: Sequence[str] | None = None, older_than: float | None = None, limit: int = 1000,
                       now: datetime | None = None) -> int:
        params = {"states": list(states), "queues": _opt(queues), "tasks": _opt(tasks),
                  "older_than": older_than, "limit": limit, "now": now}
        with self.errors():
            return len(conn.execute(self.q["job_purge_many"], params).fetchall())

    def job_find_enqueued(self, conn: Connection[Any], *, task: str, args_json: str, states: Sequence[str],
                          queue: str | None = None) -> list[dict[str, Any]]:
        return self._dicts(conn, "job_find_enqueued", {"task": task, "args": args_json, "states": list(states),
                                                       "queue": queue})

    def notify_send(self, conn: Connection[Any], channel: str, payloads: Sequence[str]) -> None:
        with self.errors():
            conn.execute(self.q["notify_send"], {"channel": channel, "payloads": list(payloads)})

    def listen(self, conn: Connection[Any], channel: str) -> None:
        """LISTEN on `channel` (an identifier, so composed rather than bound as a parameter)."""
        with self.errors():
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    async def alisten(self, conn: AsyncConnection[Any], channel: str) -> None:
        with self.errors():
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    # -- queues and stats ---------------------------------------------------------------------------

    def queue_pause(self, conn: Connection[Any], name: str, now: datetime | None = None) -> datetime:
        with self.errors():
            row = conn.execute(self.q["queue_pause"], {"name": name, "now": now}).fetchone()
        assert row is not None  # INSERT ... ON CONFLICT DO UPDATE always returns the row
        return row[0]  # type: ignore[no-any-return]

    def queue_resume(self, conn: Connection[Any], name: str, *, channel: str, now: datetime | None = None) -> bool:
        """Unpause; True if it was paused. Wakes the queue's workers in the same transaction."""
        with self.errors(), conn.transaction():
            row = conn.execute(self.q["queue_resume"], {"name": name, "now": now}).fetchone()
            conn.execute(self.q["notify_send"], {"channel": channel, "payloads": [name]})
        return bool(row and row[0])

    def queue_list_paused(self, conn: Connection[Any]) -> dict[str, datetime]:
        with self.errors():
            return {str(r[0]): r[1] for r in conn.execute(self.q["queue_list_paused"]).fetchall()}

    def queue_stats(self, conn: Connection[Any], now: datetime | None = None) -> list[dict[str, Any]]:
        return self._dicts(conn, "queue_stats", {"now": now})

    def stats_by_state(self, conn: Connection[Any]) -> dict[str, int]:
        with self.errors():
            return {str(r[0]): int(r[1]) for r in conn.execute(self.q["stats_by_state"]).fetchall()}

    def stats_recent_by_task(self, conn: Connection[Any], seconds: float,
                             now: datetime | None = None) -> list[dict[str, Any]]:
        return self._dicts(conn, "stats_recent_by_task", {"seconds": seconds, "now": now})

    # -- doctor -----------------------------------------------------------------------------------------

    def doctor_server(self, conn: Connection[Any]) -> dict[str, Any]:
        return self._dicts(conn, "doctor_server", {})[0]

    def doctor_table_health(self, conn: Connection[Any], schema: str) -> dict[str, Any] | None:
        rows = self._dicts(conn, "doctor_table_health", {"schema": schema})
        return rows[0] if rows else None

    def doctor_long_transactions(self, conn: Connection[Any], seconds: float) -> list[dict[str, Any]]:
        return self._dicts(conn, "doctor_long_transactions", {"seconds": seconds})

    def doctor_replication_slots(self, conn: Connection[Any]) -> list[dict[str, Any]]:
        return self._dicts(conn, "doctor_replication_slots", {})

    # -- benchmarks (benchmarks/completion_notify.py) -----------------------------------------------

    def bench_notify_final(self, conn: Connection[Any], *, enabled: bool) -> None:
        """Switch the jobs_notify_final trigger, to measure what it costs the completion write."""
        with self.errors():
            conn.execute(self.q["bench_notify_final_enable" if enabled else "bench_notify_final_disable"])
