"""Queries of workflows.sql: inserting a workflow's steps, reading its state and steps, cancel, retention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, LiteralString

import msgspec
import psycopg
from psycopg import AsyncConnection, Connection

from pgtasks.core.errors import DatabaseError
from pgtasks.core.models import JobState, StepRow, WorkflowPlan
from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import CopyIn, Operation, every, execute, one, select_dict, select_dicts

Queries = Mapping[str, LiteralString]
_ENCODER = msgspec.json.Encoder()

# From this many steps on, the steps are streamed by COPY (as bulk enqueue does, same threshold).
COPY_MIN_STEPS = 500


class _StepRecord(msgspec.Struct, frozen=True):
    """A step as the insert statement takes it: ids resolved, times on the database clock."""

    id: int
    task: str
    queue: str
    args: msgspec.Raw
    state: str
    priority: int
    max_attempts: int
    run_at: datetime
    expires_at: datetime | None
    step: int
    waits: int
    wait_delay: float | None
    next_ids: list[int] | None
    input_from: list[int] | None
    input_param: str | None
    input_list: bool
    limit_key: str | None


def _record(row: StepRow, ids: Sequence[int], db_now: datetime) -> _StepRecord:
    """The step's row: a step that waits keeps its countdown for when it is ready; one that does
    not starts now (or after its countdown, or at its eta), as a plain job would."""
    if row.waits:
        run_at, state, wait_delay = row.run_at or db_now, JobState.WAITING, row.delay
    else:
        run_at = row.run_at or db_now + timedelta(seconds=row.delay or 0.0)
        state = JobState.SCHEDULED if run_at > db_now else JobState.AVAILABLE
        wait_delay = None
    expires_at = row.expires_at
    if expires_at is None and row.expires_in is not None:
        expires_at = db_now + timedelta(seconds=row.expires_in)
    return _StepRecord(
        id=ids[row.step], task=row.task, queue=row.queue, args=msgspec.Raw(row.args.encode()), state=state.value,
        priority=row.priority, max_attempts=row.max_attempts, run_at=run_at, expires_at=expires_at, step=row.step,
        waits=row.waits, wait_delay=wait_delay,
        next_ids=[ids[s] for s in row.next_steps] or None,
        input_from=[ids[s] for s in row.input_from] or None,
        input_param=row.input_param, input_list=row.input_list, limit_key=row.limit_key)


def _copy_tuple(r: _StepRecord, workflow_id: int) -> tuple[Any, ...]:
    return (r.id, r.task, r.queue, bytes(r.args).decode(), r.state, r.priority, r.max_attempts, r.run_at,
            r.expires_at, workflow_id, r.step, r.waits, r.wait_delay, r.next_ids, r.input_from, r.input_param,
            r.input_list, r.limit_key)


def _reserve_params(plan: WorkflowPlan) -> dict[str, Any]:
    return {
        "kind": plan.kind, "structure": _ENCODER.encode(plan.structure).decode(), "steps": len(plan.steps),
        "result_steps": list(plan.result_steps), "result_list": plan.result_list,
        "link_error": None if plan.link_error is None else _ENCODER.encode(plan.link_error).decode(),
    }


def insert(q: Queries, plan: WorkflowPlan, *, copy: bool) -> Operation[tuple[int, list[int]]]:
    """Insert a workflow: its row and every step, in two round trips. Returns (workflow id, step ids)."""
    reserved = yield one(q["workflow_reserve"], _reserve_params(plan))
    if reserved is None or reserved[2] is None or len(reserved[2]) != len(plan.steps):
        raise DatabaseError(f"workflow_reserve returned {reserved!r} for {len(plan.steps)} steps")
    workflow_id, db_now, ids = int(reserved[0]), reserved[1], sorted(reserved[2])
    records = [_record(row, ids, db_now) for row in plan.steps]
    if copy:
        yield CopyIn(q["workflow_copy_steps"], (_copy_tuple(r, workflow_id) for r in records))
    else:
        yield execute(q["workflow_insert_steps"],
                      {"workflow_id": workflow_id, "rows": _ENCODER.encode(records).decode()})
    return workflow_id, ids


def _copies(conn: Connection[Any] | AsyncConnection[Any], plan: WorkflowPlan) -> bool:
    return len(plan.steps) >= COPY_MIN_STEPS and conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


def step_ids(q: Queries, workflow_id: int, steps: Sequence[int]) -> Operation[dict[int, int]]:
    rows = yield every(q["workflow_step_ids"], {"id": workflow_id, "steps": list(steps)})
    return {int(step): int(job_id) for step, job_id in rows}


# (failed job id, cancelled as a whole, failed task, failed state, failed last error) and the
# result steps' (id, state, result, last error)
Failure = tuple[int | None, bool, str | None, str | None, Any]
StepOutcome = tuple[int, str, str | None, Any]


def outcome(q: Queries, workflow_id: int, result_ids: Sequence[int]) -> Operation[
        tuple[Failure | None, list[StepOutcome]]]:
    failure = yield one(q["workflow_failure"], {"id": workflow_id})
    rows = yield every(q["workflow_outcomes"], {"ids": list(result_ids)})
    found: Failure | None = None if failure is None else (failure[0], bool(failure[1]), failure[2], failure[3],
                                                          failure[4])
    return found, [(int(r[0]), str(r[1]), r[2], r[3]) for r in rows]


def cancel(q: Queries, workflow_id: int, reason: str, control: str,
           now: datetime | None) -> Operation[dict[int, str] | None]:
    """Cancel every unfinished step; None when there is no such workflow, {} when nothing is left
    to cancel (a finished workflow keeps its state)."""
    unfinished = yield every(q["workflow_lock_steps"], {"id": workflow_id})
    if (yield one(q["workflow_exists"], {"id": workflow_id})) is None:
        return None
    if not unfinished:
        return {}
    yield execute(q["workflow_mark_cancelled"], {"id": workflow_id, "now": now})
    rows = yield every(q["workflow_cancel_steps"], {"id": workflow_id, "reason": reason, "now": now})
    requested = [str(r[0]) for r in rows if r[1] == "cancel_requested"]
    if requested:
        yield execute(q["notify_send"], {"channel": control, "payloads": requested})
    return {int(r[0]): str(r[1]) for r in rows}


def delete_finished(q: Queries, params: dict[str, Any]) -> Operation[tuple[int, int]]:
    row = yield one(q["workflow_delete_finished"], params)
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


class WorkflowStore(StoreBase):
    """Workflows: insert (two round trips, COPY for big ones), reads for WorkflowRef and the CLI, cancel,
    and the cleaner's delete."""

    def workflow_insert(self, conn: Connection[Any], plan: WorkflowPlan) -> tuple[int, list[int]]:
        """Insert the workflow's row and steps in one transaction (a savepoint inside the caller's)."""
        return self.run(conn, insert(self.queries, plan, copy=_copies(conn, plan)), transaction=True)

    async def aworkflow_insert(self, conn: AsyncConnection[Any], plan: WorkflowPlan) -> tuple[int, list[int]]:
        return await self.arun(conn, insert(self.queries, plan, copy=_copies(conn, plan)), transaction=True)

    def workflow_get(self, conn: Connection[Any], workflow_id: int) -> dict[str, Any] | None:
        return self.run(conn, select_dict(self.queries["workflow_get"], {"id": workflow_id}))

    async def aworkflow_get(self, conn: AsyncConnection[Any], workflow_id: int) -> dict[str, Any] | None:
        return await self.arun(conn, select_dict(self.queries["workflow_get"], {"id": workflow_id}))

    def workflow_list(self, conn: Connection[Any], *, states: Sequence[str] | None = None,
                      limit: int = 50) -> list[dict[str, Any]]:
        params = {"states": list(states) if states else None, "limit": limit}
        return self.run(conn, select_dicts(self.queries["workflow_list"], params))

    def workflow_steps(self, conn: Connection[Any], workflow_id: int) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["workflow_steps"], {"id": workflow_id}))

    async def aworkflow_steps(self, conn: AsyncConnection[Any], workflow_id: int) -> list[dict[str, Any]]:
        return await self.arun(conn, select_dicts(self.queries["workflow_steps"], {"id": workflow_id}))

    def workflow_step_ids(self, conn: Connection[Any], workflow_id: int, steps: Sequence[int]) -> dict[int, int]:
        return self.run(conn, step_ids(self.queries, workflow_id, steps))

    async def aworkflow_step_ids(self, conn: AsyncConnection[Any], workflow_id: int,
                                 steps: Sequence[int]) -> dict[int, int]:
        return await self.arun(conn, step_ids(self.queries, workflow_id, steps))

    def workflow_outcome(self, conn: Connection[Any], workflow_id: int,
                         result_ids: Sequence[int]) -> tuple[Failure | None, list[StepOutcome]]:
        return self.run(conn, outcome(self.queries, workflow_id, result_ids))

    async def aworkflow_outcome(self, conn: AsyncConnection[Any], workflow_id: int,
                                result_ids: Sequence[int]) -> tuple[Failure | None, list[StepOutcome]]:
        return await self.arun(conn, outcome(self.queries, workflow_id, result_ids))

    def workflow_cancel(self, conn: Connection[Any], workflow_id: int, *, reason: str, control: str,
                        now: datetime | None = None) -> dict[int, str] | None:
        """Cancel a workflow's unfinished steps: {id: 'cancelled' | 'cancel_requested'}; None if unknown."""
        return self.run(conn, cancel(self.queries, workflow_id, reason, control, now), transaction=True)

    async def aworkflow_cancel(self, conn: AsyncConnection[Any], workflow_id: int, *, reason: str, control: str,
                               now: datetime | None = None) -> dict[int, str] | None:
        return await self.arun(conn, cancel(self.queries, workflow_id, reason, control, now), transaction=True)

    async def aworkflow_delete_finished(self, conn: AsyncConnection[Any], *, retention: Mapping[str, float | None],
                                        limit: int, now: datetime | None = None) -> tuple[int, int]:
        """Delete up to `limit` finished workflows past retention; returns (workflows, jobs) deleted."""
        kept = [seconds for seconds in retention.values() if seconds is not None]
        if not kept:
            return 0, 0
        params = {"completed": retention.get("completed"), "cancelled": retention.get("cancelled"),
                  "discarded": retention.get("discarded"), "shortest": min(kept), "limit": limit, "now": now}
        return await self.arun(conn, delete_finished(self.queries, params))
