"""Queries of dashboard.sql: the reads behind the web dashboard's pages, and its bulk delete."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection

from pgtasks.core.models import FINAL_STATES, PENDING_STATES, JobState
from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, dict_one, dicts, every, execute, select_dicts

# Below this size the finished states are counted exactly (a scan of jobs_finalized_idx that
# takes milliseconds); above it, from the planner's statistics.
EXACT_COUNT_MAX_BYTES = 64 * 1024 * 1024
MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class JobQuery:
    """The filters of the jobs page as query parameters (None = any)."""

    states: Sequence[str] | None = None
    queues: Sequence[str] | None = None
    tasks: Sequence[str] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    args_contain: str | None = None  # a JSON object the arguments must contain (jsonb @>)
    args_like: str | None = None  # an ILIKE pattern over the arguments' JSON text

    def params(self) -> dict[str, Any]:
        states = list(self.states) if self.states else []

        def among(group: Iterable[str]) -> list[str] | None:
            picked = [s for s in states if s in group]
            return picked or None

        # The states split by the partial index that holds them (see dashboard_job_page).
        return {"states": states or None, "pending_states": among(PENDING_STATES),
                "running": JobState.RUNNING in states, "waiting": JobState.WAITING in states,
                "final_states": among(FINAL_STATES),
                "queues": list(self.queues) if self.queues else None,
                "tasks": list(self.tasks) if self.tasks else None,
                "created_from": self.created_from, "created_to": self.created_to,
                "args_contain": self.args_contain, "args_like": self.args_like}


@dataclass(frozen=True, slots=True)
class StateCounts:
    """Jobs per state; `estimated` names the states whose count comes from statistics, not a count."""

    counts: dict[str, int]
    estimated: frozenset[str]
    note: str | None = None


def _ids(rows: list[tuple[Any, ...]]) -> list[int]:
    return [int(r[0]) for r in rows]


def _state_counts(q: dict[str, Any], schema: str) -> Operation[StateCounts]:
    counts = {str(r[0]): int(r[1]) for r in (yield every(q["dashboard_unfinished_counts"]))}
    size = yield dict_one(q["dashboard_table_size"], {"schema": schema})
    if size is None or size["bytes"] <= EXACT_COUNT_MAX_BYTES:
        counts.update({str(r[0]): int(r[1]) for r in (yield every(q["dashboard_finished_counts"]))})
        return StateCounts(counts, frozenset())
    finished = ("completed", "cancelled", "discarded")
    if size["reltuples"] < 0 or not size["common_states"]:
        return StateCounts(counts, frozenset(finished),
                           "finished counts unknown: the jobs table was never analyzed (run ANALYZE, "
                           "or let autovacuum)")
    freqs = dict(zip(size["common_states"], size["common_freqs"], strict=True))
    for state in finished:
        counts[state] = round(freqs.get(state, 0.0) * size["reltuples"])
    return StateCounts(counts, frozenset(finished), "finished counts are estimates from the planner's statistics")


class DashboardStore(StoreBase):
    def dashboard_throughput(self, conn: Connection[Any], seconds: float,
                             now: datetime | None = None) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["dashboard_throughput"], {"seconds": seconds, "now": now}))

    def dashboard_durations(self, conn: Connection[Any], seconds: float,
                            now: datetime | None = None) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["dashboard_durations"], {"seconds": seconds, "now": now}))

    def dashboard_state_counts(self, conn: Connection[Any]) -> StateCounts:
        return self.run(conn, _state_counts(self.queries, self.schema))

    def dashboard_job_page(self, conn: Connection[Any], query: JobQuery, *, before: int | None, limit: int,
                           scan: int) -> list[dict[str, Any]]:
        params = query.params() | {"before": before, "limit": limit, "scan": scan}
        return self.run(conn, select_dicts(self.queries["dashboard_job_page"], params))

    def dashboard_job_match_ids(self, conn: Connection[Any], query: JobQuery, *, before: int | None,
                                limit: int) -> list[int]:
        params = query.params() | {"before": before, "limit": limit}
        return _ids(self.run(conn, _rows(self.queries["dashboard_job_match_ids"], params)))

    def dashboard_job_match_count(self, conn: Connection[Any], query: JobQuery) -> int:
        rows = self.run(conn, _rows(self.queries["dashboard_job_match_count"], query.params()))
        return int(rows[0][0])

    def dashboard_job_delete_many(self, conn: Connection[Any], ids: Sequence[int]) -> list[int]:
        return _ids(self.run(conn, _rows(self.queries["dashboard_job_delete_many"], {"ids": list(ids)})))

    def dashboard_queue_names(self, conn: Connection[Any]) -> list[str]:
        return [str(r[0]) for r in self.run(conn, _rows(self.queries["dashboard_queue_names"], {}))]

    def dashboard_recent_fires(self, conn: Connection[Any], names: Sequence[str],
                               per_schedule: int) -> list[dict[str, Any]]:
        params = {"names": list(names), "per_schedule": per_schedule}
        return self.run(conn, select_dicts(self.queries["dashboard_recent_fires"], params))

    def dashboard_change_mark(self, conn: Connection[Any]) -> dict[str, Any]:
        return self.run(conn, select_dicts(self.queries["dashboard_change_mark"], {}))[0]

    def dashboard_workflow_page(self, conn: Connection[Any], *, states: Sequence[str] | None, before: int | None,
                                limit: int, scan: int) -> WorkflowPage:
        """Workflows newest first below `before` in `states` (None: any), with their steps counted,
        from a window of at most `scan` workflows."""
        return self.run(conn, _workflow_page(self.queries, states, before, limit, scan))

    def dashboard_workflow_view(self, conn: Connection[Any], workflow_id: int, *,
                                preview: int) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """A workflow and every step of it, read in one snapshot: apart, a step that completed
        between the two reads showed completed nodes under a workflow still marked running."""
        return self.run(conn, _workflow_view(self.queries, workflow_id, preview), transaction=True)


@dataclass(frozen=True, slots=True)
class WorkflowPage:
    """A page of workflows: `scanned` workflows were looked at, down to id `scanned_to`; `oldest` is
    the first workflow there is (so a page knows whether any is older than what it read)."""

    rows: list[dict[str, Any]]
    scanned: int
    scanned_to: int | None
    oldest: int | None = None


def _workflow_view(q: dict[str, Any], workflow_id: int,
                   preview: int) -> Operation[tuple[dict[str, Any], list[dict[str, Any]]] | None]:
    yield execute(q["dashboard_snapshot"])
    workflow = yield dict_one(q["workflow_get"], {"id": workflow_id})
    if workflow is None:
        return None
    steps = yield dicts(q["dashboard_workflow_steps"], {"id": workflow_id, "preview": preview})
    return workflow, steps


def _workflow_page(q: dict[str, Any], states: Sequence[str] | None, before: int | None, limit: int,
                   scan: int) -> Operation[WorkflowPage]:
    window = yield dict_one(q["dashboard_workflow_window"], {"before": before or MAX_BIGINT, "scan": scan})
    if window is None or not window["scanned"]:
        return WorkflowPage([], 0, None)
    wanted = set(states or ())
    params = {"states": sorted(wanted) or None, "low": window["low"], "high": window["high"], "limit": limit,
              # Which shortcut applies: failed and cancelled are told by the workflow's own row,
              # running and completed need a look at its steps.
              "open": not wanted or bool(wanted & {"running", "completed"}),
              "ended": not wanted or bool(wanted & {"failed", "cancelled"})}
    rows: list[dict[str, Any]] = yield dicts(q["dashboard_workflow_page"], params)
    return WorkflowPage(rows, int(window["scanned"]), int(window["low"]), int(window["oldest"]))


def _rows(query: Any, params: dict[str, Any]) -> Operation[list[tuple[Any, ...]]]:
    rows: list[tuple[Any, ...]] = yield every(query, params)
    return rows
