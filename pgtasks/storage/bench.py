"""Queries of bench.sql and bench_notify.sql, for `pgtasks bench` and benchmarks/: kept out of the Store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, LiteralString

from psycopg import Connection

from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, every, one, select_dict, statement

Queries = Mapping[str, LiteralString]


def _floats(query: LiteralString, params: dict[str, Any]) -> Operation[list[float]]:
    return [float(r[0]) for r in (yield every(query, params))]


def _ints(query: LiteralString, params: dict[str, Any]) -> Operation[list[int]]:
    return [int(r[0]) for r in (yield every(query, params))]


def _count(query: LiteralString, params: dict[str, Any]) -> Operation[int]:
    row = yield one(query, params)
    return int(row[0]) if row else 0


class BenchStore(StoreBase):
    """Measurement queries over one schema's jobs; nothing here runs in a worker or an App."""

    def drain_window(self, conn: Connection[Any], task: str) -> dict[str, Any]:
        """completed, total, first_claim, last_outcome, fetches, outcome_writes of one task's jobs."""
        found = self.run(conn, select_dict(self.queries["bench_drain_window"], {"task": task}))
        if found is None:  # an aggregate always returns one row
            raise AssertionError("bench_drain_window returned no row")
        return found

    def start_latencies(self, conn: Connection[Any], task: str) -> list[float]:
        """Enqueue-to-claim latency (ms) of each completed job of `task`, in id order."""
        return self.run(conn, _floats(self.queries["bench_start_latencies"], {"task": task}))

    def backend_pids(self, conn: Connection[Any], application_name: str) -> list[int]:
        return self.run(conn, _ints(self.queries["bench_backend_pids"], {"application_name": application_name}))

    def count_completed(self, conn: Connection[Any], task: str) -> int:
        return self.run(conn, _count(self.queries["bench_count_completed"], {"task": task}))

    def count_unfinished(self, conn: Connection[Any]) -> int:
        """Jobs of any task that are not finished yet (queued, scheduled, retryable or running)."""
        return self.run(conn, _count(self.queries["bench_count_unfinished"], {}))

    def schema_drop(self, conn: Connection[Any]) -> None:
        """Drop this schema; only pgtasks.ops.bench.drop_schema() calls it, for its throwaway schemas."""
        self.run(conn, statement(self.queries["bench_schema_drop"]))

    def notify_final(self, conn: Connection[Any], *, enabled: bool) -> None:
        """Switch the jobs_notify_final trigger, to measure what it costs the completion write."""
        name = "bench_notify_final_enable" if enabled else "bench_notify_final_disable"
        self.run(conn, statement(self.queries[name]))

    def workflow_triggers(self, conn: Connection[Any], *, enabled: bool) -> None:
        """Switch the two workflow triggers, to measure what they cost a plain job's outcome write."""
        name = "bench_workflow_triggers_enable" if enabled else "bench_workflow_triggers_disable"
        self.run(conn, statement(self.queries[name]))
