"""`pgtasks workflows`: list workflows, show one as its tree of steps, cancel one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click
import msgspec

from pgtasks.app import App
from pgtasks.cli.base import CliState
from pgtasks.cli.output import EXIT_NOT_FOUND, emit_json, fail, human_duration, json_option, split_csv, table
from pgtasks.client.workflows import WORKFLOW_STATES, step_paths
from pgtasks.core.channels import control_channel

RESULT_WIDTH = 40  # characters of a step's result summary in the tree


def _app(ctx: click.Context) -> App:
    return ctx.find_object(CliState).app()  # type: ignore[union-attr]


def _states(values: tuple[str, ...]) -> list[str] | None:
    states = split_csv(values)
    for state in states or ():
        if state not in WORKFLOW_STATES:
            raise click.BadParameter(f"{state!r} is not a workflow state; choose from {', '.join(WORKFLOW_STATES)}",
                                     param_hint="--state")
    return states


@click.group()
def workflows() -> None:
    """Inspect and cancel workflows (chain, group, chord, link); exit codes as `pgtasks jobs`."""


@workflows.command("list")
@click.option("--state", "states", multiple=True, metavar="STATE",
              help=f"Filter by state (repeat or comma-separate): {', '.join(WORKFLOW_STATES)}.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many, newest first.")
@json_option
@click.pass_context
def list_workflows(ctx: click.Context, states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List workflows, newest first, with their steps counted by outcome."""
    app = _app(ctx)
    with app.connect() as conn:
        rows = app.store.workflow_list(conn, states=_states(states), limit=limit)
    if as_json:
        emit_json(rows)
        return
    table(["id", "kind", "state", "steps", "completed", "unfinished", "failed", "created_at", "took"],
          [[r["id"], r["kind"], r["state"], r["steps"], r["completed"], r["unfinished"], r["failed"],
            r["created_at"], human_duration(r["seconds"]) if r["state"] != "running" else "-"] for r in rows])


def _summary(raw: str | None) -> str:
    if raw is None:
        return "-"
    return raw if len(raw) <= RESULT_WIDTH else raw[:RESULT_WIDTH - 1] + "…"


def _step_line(step: dict[str, Any] | None, index: int, task: str) -> str:
    if step is None:
        return f"[{index}] {task}: (deleted)"
    line = (f"[{index}] job {step['id']} {step['task']}  {step['state']}  attempt {step['attempt']}/"
            f"{step['max_attempts']}  ran {human_duration(step['run_seconds'])}")
    if step["state"] == "completed":
        line += f"  result={_summary(step['result'])}"
    elif step["state"] == "waiting":
        line += f"  (waits for {step['wait_count']})"
    error = step["last_error"]
    if step["state"] in ("cancelled", "discarded") and isinstance(error, dict):
        line += f"  {error.get('type')}: {error.get('message')}"
    return line


def _tree(node: dict[str, Any], steps: dict[int, dict[str, Any]], depth: int = 0) -> Iterator[str]:
    pad = "  " * depth
    kind = node.get("type")
    if kind == "task":
        yield pad + _step_line(steps.get(int(node["step"])), int(node["step"]), str(node.get("task")))
    elif kind in ("chain", "group"):
        yield f"{pad}{kind}"
        for child in node.get("children", []):
            yield from _tree(child, steps, depth + 1)
    elif kind == "chord":
        yield f"{pad}chord"
        yield f"{pad}  header:"
        yield from _tree(node["header"], steps, depth + 2)
        yield f"{pad}  body:"
        yield from _tree(node["body"], steps, depth + 2)


def _json_tree(node: dict[str, Any], steps: dict[int, dict[str, Any]]) -> dict[str, Any]:
    kind = node.get("type")
    if kind == "task":
        return {**node, "job": steps.get(int(node["step"]))}
    if kind == "chord":
        return {"type": "chord", "header": _json_tree(node["header"], steps), "body": _json_tree(node["body"], steps)}
    return {"type": kind, "children": [_json_tree(child, steps) for child in node.get("children", [])]}


@workflows.command("show")
@click.argument("workflow_id", type=int)
@json_option
@click.pass_context
def show(ctx: click.Context, workflow_id: int, as_json: bool) -> None:
    """One workflow as its tree of steps: each with its state, attempt, run time and result."""
    app = _app(ctx)
    with app.connect() as conn:
        row = app.store.workflow_get(conn, workflow_id)
        if row is None:
            fail(f"workflow {workflow_id} not found")
        rows = app.store.workflow_steps(conn, workflow_id)
    assert row is not None
    structure = msgspec.json.decode(row.pop("structure"))
    steps = {int(s["step"]): {**s, "result": s["result"]} for s in rows}
    errback = [s for s in rows if s["step"] >= row["steps"]]
    if as_json:
        decoded = {index: {**s, "result": None if s["result"] is None else msgspec.json.decode(s["result"])}
                   for index, s in steps.items()}
        emit_json({"workflow": row, "tree": _json_tree(structure, decoded),
                   "link_error_job": decoded.get(errback[0]["step"]) if errback else None})
        return
    click.echo(f"workflow {row['id']}: {row['kind']}, {row['steps']} steps, {row['state']}, "
               f"created {row['created_at'].isoformat(timespec='seconds')}")
    if row["failed_job_id"] is not None:
        failed = next((s for s in rows if s["id"] == row["failed_job_id"]), None)
        where = step_paths(structure).get(failed["step"], "?") if failed else "?"
        click.echo(f"failed at {row['failed_at'].isoformat(timespec='seconds')}: job {row['failed_job_id']} "
                   f"(step {failed['step'] if failed else '?'}, {where})")
    if row["cancelled_at"] is not None:
        click.echo(f"cancelled at {row['cancelled_at'].isoformat(timespec='seconds')}")
    for line in _tree(structure, steps):
        click.echo(line)
    if errback:
        click.echo("link_error:")
        click.echo("  " + _step_line(errback[0], errback[0]["step"], errback[0]["task"]))


@workflows.command("cancel")
@click.argument("workflow_id", type=int)
@click.option("--reason", default=None, help="Recorded in each cancelled step's errors "
              "(default: workflow ID cancelled).")
@json_option
@click.pass_context
def cancel(ctx: click.Context, workflow_id: int, reason: str | None, as_json: bool) -> None:
    """Cancel every unfinished step; running ones are told to stop, as `jobs cancel` does. No
    link_error runs for a cancel."""
    app = _app(ctx)
    with app.connect() as conn:
        done = app.store.workflow_cancel(conn, workflow_id, reason=reason or f"workflow {workflow_id} cancelled",
                                         control=control_channel(app.schema))
    if done is None:
        fail(f"workflow {workflow_id} not found")
    assert done is not None
    if as_json:
        emit_json({"cancelled": sorted(i for i, o in done.items() if o == "cancelled"),
                   "cancel_requested": sorted(i for i, o in done.items() if o == "cancel_requested")})
    else:
        click.echo(f"workflow {workflow_id}: {sum(o == 'cancelled' for o in done.values())} step(s) cancelled, "
                   f"{sum(o == 'cancel_requested' for o in done.values())} running step(s) told to stop")
    if not done:
        ctx.exit(EXIT_NOT_FOUND)
