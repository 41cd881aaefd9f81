"""Workflow handles: WorkflowRef, its state, steps and cancel, and waiting for a workflow's result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgtasks.client.results import JobSource, Waited, await_for, decode_result, wait_for
from pgtasks.core.channels import control_channel
from pgtasks.core.definition import TaskDefinition
from pgtasks.core.errors import JobNotFoundError
from pgtasks.core.failures import failure_error
from pgtasks.core.models import FINAL_STATES, JobState
from pgtasks.storage.workflows import Failure, StepOutcome

WORKFLOW_STATES = ("running", "completed", "failed", "cancelled")
CANCEL_REASON = "workflow {id} cancelled"


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step of a workflow as it is now: `result` is the decoded return value once completed,
    `error` the last error entry ({"type", "message", ...}) of a step that failed or was cancelled."""

    id: int
    step: int
    task: str
    state: str
    attempt: int
    result: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """A handle on an enqueued workflow (chain, group, chord, or a task with link/link_error).

    `result_ids` are the steps whose results are the workflow's result: the last step of a chain,
    a chord's callback, a group's members (then `result_list`).
    """

    id: int
    app: JobSource = field(repr=False, compare=False)
    result_ids: tuple[int, ...] = ()
    result_tasks: tuple[str, ...] = ()
    result_list: bool = False
    job_ids: tuple[int, ...] = field(default=(), repr=False, compare=False)  # every step, in step order

    def state(self) -> str | None:
        """running, completed, failed or cancelled (derived from its steps); None if it no longer exists."""
        with self.app.database.pool().connection() as conn:
            row = self.app.store.workflow_get(conn, self.id)
        return None if row is None else str(row["state"])

    async def astate(self) -> str | None:
        """Async twin of state()."""
        pool = await self.app.database.apool()
        async with pool.connection() as conn:
            row = await self.app.store.aworkflow_get(conn, self.id)
        return None if row is None else str(row["state"])

    def results(self) -> list[StepResult]:
        """Every step in step order, with its state and decoded result (the link_error job last)."""
        with self.app.database.pool().connection() as conn:
            rows = self.app.store.workflow_steps(conn, self.id)
        return step_results(self.app.tasks, rows)

    async def aresults(self) -> list[StepResult]:
        """Async twin of results()."""
        pool = await self.app.database.apool()
        async with pool.connection() as conn:
            rows = await self.app.store.aworkflow_steps(conn, self.id)
        return step_results(self.app.tasks, rows)

    def cancel(self, reason: str | None = None) -> dict[int, str]:
        """Cancel every unfinished step: {job id: 'cancelled' | 'cancel_requested'} (running steps
        are told to stop, as `pgtasks jobs cancel` does). No link_error runs for it."""
        store = self.app.store
        with self.app.database.pool().connection() as conn:
            done = store.workflow_cancel(conn, self.id, reason=reason or CANCEL_REASON.format(id=self.id),
                                         control=control_channel(store.schema))
        if done is None:
            raise JobNotFoundError(f"workflow {self.id} does not exist (never enqueued, or deleted by retention)")
        return done

    async def acancel(self, reason: str | None = None) -> dict[int, str]:
        """Async twin of cancel()."""
        store = self.app.store
        pool = await self.app.database.apool()
        async with pool.connection() as conn:
            done = await store.aworkflow_cancel(conn, self.id, reason=reason or CANCEL_REASON.format(id=self.id),
                                                control=control_channel(store.schema))
        if done is None:
            raise JobNotFoundError(f"workflow {self.id} does not exist (never enqueued, or deleted by retention)")
        return done

    def wait(self, timeout: float | None = None, *, poll_interval: float = 1.0, listen: bool = True) -> Any:
        """Block until the workflow's result is there and return it: a chain's last step's, a
        chord's callback's, a group's list. If the workflow failed, raises what JobRef.wait()
        raises for the step that failed it (JobDiscardedError / JobCancelledError with that job's
        id and error); WaitTimeoutError after `timeout` seconds."""
        return _wait(self, timeout=timeout, poll_interval=poll_interval, listen=listen)

    async def await_result(self, timeout: float | None = None, *, poll_interval: float = 1.0,
                           listen: bool = True) -> Any:
        """Async twin of wait()."""
        return await _await(self, timeout=timeout, poll_interval=poll_interval, listen=listen)


def step_results(tasks: Mapping[str, TaskDefinition[Any, Any]], rows: Sequence[dict[str, Any]]) -> list[StepResult]:
    out: list[StepResult] = []
    for row in rows:
        result = None
        if row["state"] == JobState.COMPLETED:
            result = decode_result(tasks, row["task"], row["id"], row["result"])
        error = row["last_error"] if row["state"] in (JobState.CANCELLED, JobState.DISCARDED) else None
        out.append(StepResult(row["id"], row["step"], row["task"], row["state"], row["attempt"], result,
                              error if isinstance(error, dict) else None))
    return out


def _raise_for(job_id: int, state: str, last_error: Any) -> None:
    # What JobRef.wait() raises for that job: of the task's exception type where it can be imported.
    raise failure_error(job_id, state, last_error if isinstance(last_error, dict) else None)


def settle_workflow(ref: WorkflowRef, failure: Failure | None, outcomes: list[StepOutcome]) -> tuple[bool, Any]:
    """(True, result) once the workflow's result steps completed; raises once it failed."""
    if failure is None:
        raise JobNotFoundError(f"workflow {ref.id} does not exist (never enqueued, or deleted by retention)")
    failed_id, _cancelled, _task, failed_state, failed_error = failure
    if failed_id is not None:
        # The failed step may since have been retried by an operator: the workflow stays failed.
        _raise_for(failed_id, failed_state if failed_state in FINAL_STATES else JobState.DISCARDED, failed_error)
    found = {job_id: (state, raw, error) for job_id, state, raw, error in outcomes}
    missing = [job_id for job_id in ref.result_ids if job_id not in found]
    if missing:
        raise JobNotFoundError(f"workflow {ref.id}: step job {missing[0]} does not exist (deleted by retention?)")
    if any(found[job_id][0] not in FINAL_STATES for job_id in ref.result_ids):
        return False, None
    for job_id in ref.result_ids:  # cancelled with the whole workflow
        state, _raw, error = found[job_id]
        if state != JobState.COMPLETED:
            _raise_for(job_id, state, error)
    values = [decode_result(ref.app.tasks, task, job_id, found[job_id][1])
              for job_id, task in zip(ref.result_ids, ref.result_tasks, strict=True)]
    return True, values if ref.result_list else values[0]


def _waited(ref: WorkflowRef) -> Waited:
    """Woken by the completion NOTIFY of a result step (a failure always ends one: the failed step
    itself, or the waiting result steps it cancels), polled in any case (see wait_for)."""
    store = ref.app.store
    return Waited(frozenset(str(job_id) for job_id in ref.result_ids),
                  lambda conn: store.workflow_outcome(conn, ref.id, ref.result_ids),
                  lambda conn: store.aworkflow_outcome(conn, ref.id, ref.result_ids),
                  lambda found: settle_workflow(ref, *found),
                  f"workflow {ref.id}", f"pgtasks workflows show {ref.id}")


def _wait(ref: WorkflowRef, *, timeout: float | None, poll_interval: float, listen: bool) -> Any:
    return wait_for(ref.app, _waited(ref), timeout=timeout, poll_interval=poll_interval, listen=listen)


async def _await(ref: WorkflowRef, *, timeout: float | None, poll_interval: float, listen: bool) -> Any:
    return await await_for(ref.app, _waited(ref), timeout=timeout, poll_interval=poll_interval, listen=listen)


def step_paths(structure: Mapping[str, Any]) -> dict[int, str]:
    """Each step's place in the workflow's structure, as `pgtasks jobs show` and the dashboard write
    it: `chain[1] > chord.header > group[0]`, or `task` for a workflow of one step."""
    paths: dict[int, str] = {}

    def walk(node: Mapping[str, Any], path: str) -> None:
        kind = node.get("type")
        if kind == "task":
            paths[int(node["step"])] = path or "task"
        elif kind in ("chain", "group"):
            for position, child in enumerate(node.get("children", [])):
                walk(child, f"{path} > {kind}[{position}]" if path else f"{kind}[{position}]")
        elif kind == "chord":
            walk(node["header"], f"{path} > chord.header" if path else "chord.header")
            walk(node["body"], f"{path} > chord.body" if path else "chord.body")

    walk(structure, "")
    return paths
