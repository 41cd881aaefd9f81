"""What the workflows pages show: the list with its state filter and cursor, one workflow with its
graph and table of steps, and where a step sits for the job page. Read through the App's Store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgtasks.client.workflows import step_paths
from pgtasks.dashboard.data import connection
from pgtasks.dashboard.filters import WorkflowFilter
from pgtasks.dashboard.graph import Graph, Step, layout

if TYPE_CHECKING:
    from pgtasks.app import App

# Workflows a filtered page reads at most (the next page goes on from there). Telling running from
# completed probes the workflow's steps (a few microseconds each); failed and cancelled are told by
# the workflow's own row (a fraction of one), so a filter on those alone reads further per page.
WORKFLOW_SCAN = 2_000
ENDED_SCAN = 50_000
ENDED = frozenset({"failed", "cancelled"})
PREVIEW = 120  # characters of a step's arguments and result the page is sent
MAX_TABLE_STEPS = 500  # rows of the steps table; the graph still stands for every step


@dataclass(slots=True)
class WorkflowPage:
    rows: list[dict[str, Any]]
    next_cursor: int | None
    scanned: int
    filtered: bool
    exhausted_scan: bool  # the page read its whole window of workflows without filling up


def workflow_page(app: App, f: WorkflowFilter) -> WorkflowPage:
    filtered = bool(f.states)
    # Without a filter every workflow walked is shown, so walking a page is reading a page.
    scan = (ENDED_SCAN if set(f.states) <= ENDED else WORKFLOW_SCAN) if filtered else f.limit
    with connection(app) as conn:
        found = app.store.dashboard_workflow_page(conn, states=f.states, before=f.before, limit=f.limit, scan=scan)
    rows, scanned = found.rows, found.scanned
    cursor: int | None = None
    if len(rows) == f.limit:
        cursor = int(rows[-1]["id"])
    elif scanned == scan and found.scanned_to is not None:
        cursor = found.scanned_to  # read the whole window: older workflows may still match
    if cursor is not None and (found.oldest is None or found.oldest >= cursor):
        cursor = None  # nothing is older: an "older" link would lead to an empty page
    for row in rows:
        finished = row["unfinished"] == 0 and row["finished_at"] is not None
        row["took_seconds"] = (row["finished_at"] - row["created_at"]).total_seconds() if finished else None
        if not finished:
            row["finished_at"] = None
    return WorkflowPage(rows, cursor, scanned, filtered, filtered and scanned == scan and len(rows) < f.limit)


def _decoded(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(slots=True)
class WorkflowView:
    workflow: dict[str, Any]
    structure: dict[str, Any]
    steps: list[dict[str, Any]]  # every step in step order, each with its "position"
    graph: Graph
    unfinished: int
    states: dict[str, int]  # steps per state
    link_error: dict[str, Any] | None  # the link_error job, once the workflow failed and inserted it

    @property
    def table(self) -> list[dict[str, Any]]:
        return self.steps[:MAX_TABLE_STEPS]


def graph_steps(rows: list[dict[str, Any]]) -> list[Step]:
    return [Step(index=int(r["step"]), job_id=int(r["id"]), task=str(r["task"]), state=str(r["state"]),
                 next_ids=tuple(int(i) for i in r["next_ids"] or ())) for r in rows]


def workflow_detail(app: App, workflow_id: int) -> WorkflowView | None:
    with connection(app) as conn:
        found = app.store.dashboard_workflow_view(conn, workflow_id, preview=PREVIEW)
    if found is None:
        return None
    workflow, rows = found
    structure = _decoded(workflow.pop("structure"))
    places = step_paths(structure)
    states: dict[str, int] = {}
    for row in rows:
        row["position"] = places.get(int(row["step"]), "link_error")
        states[row["state"]] = states.get(row["state"], 0) + 1
    unfinished = sum(n for state, n in states.items() if state not in ("completed", "cancelled", "discarded"))
    errback = next((r for r in rows if int(r["step"]) >= int(workflow["steps"])), None)
    return WorkflowView(workflow, structure, rows, layout(structure, graph_steps(rows)), unfinished, states, errback)


def step_place(app: App, job: Mapping[str, Any]) -> str | None:
    """Where a job sits in its workflow (`chain[1] > group[0]`, `link_error`), None for a plain job,
    or a note that its workflow is gone."""
    if job.get("workflow_id") is None:
        return None
    with connection(app) as conn:
        workflow = app.store.workflow_get(conn, int(job["workflow_id"]))
    if workflow is None:
        return "its workflow was deleted"
    step = int(job["workflow_step"])
    if step >= int(workflow["steps"]):
        return "link_error"
    return step_paths(_decoded(workflow["structure"])).get(step, "not in the workflow's structure")
