"""`pgtasks jobs`: list, show, retry, cancel and purge jobs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import click
import msgspec
from psycopg import Connection

from pgtasks.app import App
from pgtasks.cli.base import CliState
from pgtasks.cli.output import (
    EXIT_NOT_FOUND,
    emit_json,
    fail,
    human_duration,
    json_option,
    parse_duration,
    split_csv,
    table,
)
from pgtasks.client.results import decode_progress
from pgtasks.client.workflows import step_paths
from pgtasks.core.channels import control_channel, jobs_channel
from pgtasks.core.models import ALL_STATES as JOB_STATES
from pgtasks.core.models import FINAL_STATES, JobState

ALL_STATES = [str(s) for s in JOB_STATES]
FINAL = sorted(str(s) for s in FINAL_STATES)
BATCH = 1000
PROGRESS_WIDTH = 32  # characters of the `jobs list` progress column; `jobs show` has the whole message


def _in_batches(label: str, total: int, run_batch: Callable[[], int], *, hidden: bool) -> int:
    """Call `run_batch` (one batch of at most BATCH rows; returns how many) until a short batch,
    with a progress bar on stderr; returns the rows done in all."""
    done = 0
    with click.progressbar(length=total, label=label, file=sys.stderr, hidden=hidden) as bar:
        while True:
            count = run_batch()
            done += count
            bar.update(count)
            if count < BATCH:
                return done

state_option = click.option("--state", "states", multiple=True, metavar="STATE",
                            help=f"Filter by state (repeat or comma-separate): {', '.join(ALL_STATES)}.")
queue_option = click.option("--queue", "queues", multiple=True, metavar="QUEUE", help="Filter by queue (repeatable).")
task_option = click.option("--task", "tasks", multiple=True, metavar="TASK",
                           help="Filter by task name (repeatable): the full name, or a unique last part of it "
                                "(`send` for `mail.tasks.send`).")
NAMES_SHOWN = 20  # task names an unmatched --task lists


class NoSuchTask(click.ClickException):
    """A --task name that names no task: exit 1, "nothing matched" (docs/operations.md)."""

    exit_code = EXIT_NOT_FOUND


def match_task(name: str, known: Sequence[str]) -> str:
    """`name` if a task has that name, else the one task whose name ends in `.name`.

    Only whole dotted parts match (`send` finds `mail.send`, never `resend`), so a short name
    cannot pick an unrelated task.
    """
    if name in known:
        return name
    matches = [task for task in known if task.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise click.BadParameter(f"{name!r} matches several tasks: {', '.join(matches)}; give more of the name",
                                 param_hint="--task")
    listed = ", ".join(known[:NAMES_SHOWN]) + (f" and {len(known) - NAMES_SHOWN} more" if len(known) > NAMES_SHOWN
                                                else "")
    raise NoSuchTask(f"--task {name}: nothing matched: no task is named {name!r} or ends in '.{name}'; "
                     f"tasks: {listed or 'none (no jobs yet; pass --app to include the registered tasks)'}")


def _tasks(app: App, conn: Connection[Any], values: Sequence[str]) -> list[str] | None:
    """The --task values as full task names (see match_task). Names the App registers are taken as
    they are; only another name makes this read the task names of the jobs table."""
    names = split_csv(values)
    registered = set(app.registry.tasks)
    if names is None or registered.issuperset(names):
        return names
    known = sorted(registered | set(app.store.job_task_names(conn)))
    matched = [match_task(name, known) for name in names]
    for given, full in zip(names, matched, strict=True):
        if given != full:
            click.echo(f"--task {given}: matched {full}", err=True)
    return matched


def _states(values: Sequence[str]) -> list[str] | None:
    states = split_csv(values)
    for state in states or ():
        if state not in ALL_STATES:
            raise click.BadParameter(f"{state!r} is not a job state; choose from {', '.join(ALL_STATES)}",
                                     param_hint="--state")
    return states


def _app(ctx: click.Context) -> Any:
    return ctx.find_object(CliState).app()  # type: ignore[union-attr]


@click.group()
def jobs() -> None:
    """Inspect and act on jobs (exit codes: 0 done, 1 nothing matched or not found, 2 error)."""


@jobs.command("list")
@state_option
@queue_option
@task_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many, newest first.")
@json_option
@click.pass_context
def list_jobs(ctx: click.Context, states: tuple[str, ...], queues: tuple[str, ...], tasks: tuple[str, ...],
              limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    app = _app(ctx)
    with app.connect() as conn:
        rows = app.store.job_list(conn, states=_states(states), queues=split_csv(queues),
                                  tasks=_tasks(app, conn, tasks), limit=limit)
    if as_json:
        emit_json([{**r, "progress": _json_or_none(r["progress"])} for r in rows])
        return
    table(["id", "task", "queue", "state", "attempt", "progress", "run_at", "finalized_at", "last_error"],
          [[r["id"], r["task"], r["queue"], r["state"], f"{r['attempt']}/{r['max_attempts']}",
            _progress_cell(r["progress"]), r["run_at"], r["finalized_at"],
            f"{r['last_error_type']}: {r['last_error_message']}" if r["last_error_type"] else None]
           for r in rows])


def _json_or_none(raw: str | None) -> Any:
    return None if raw is None else msgspec.json.decode(raw)


def _progress_cell(raw: str | None) -> str | None:
    """The progress column of `jobs list`: `30/120 (25%) resizing`, cut to stay a column."""
    progress = decode_progress(raw)
    if progress is None:
        return None
    text = progress.describe()
    return text if len(text) <= PROGRESS_WIDTH else text[:PROGRESS_WIDTH - 1] + "…"


def _show_progress(raw: str | None) -> None:
    """The progress lines of `jobs show`: the value, who reported it and when, and its meta."""
    progress = decode_progress(raw)
    if progress is None:
        return
    when = progress.at.isoformat(timespec="milliseconds") if progress.at is not None else "-"
    click.echo(f"{'progress:':<14}{progress.describe()} (attempt {progress.attempt}, at {when})")
    if progress.meta is not None:
        click.echo(f"  {'meta':<20}{msgspec.json.encode(progress.meta).decode()}")


@jobs.command("show")
@click.argument("job_id", type=int)
@json_option
@click.pass_context
def show(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """Everything about one job: arguments, timings, result, and each error with its traceback."""
    app = _app(ctx)
    with app.connect() as conn:
        row = app.store.job_detail(conn, job_id)
    if row is None:
        fail(f"job {job_id} not found")
    assert row is not None
    decoded = dict(row)
    for key in ("args", "errors", "result", "progress"):
        decoded[key] = _json_or_none(row[key])
    position = _position(app, row)
    decoded["workflow_position"] = position
    if as_json:
        emit_json(decoded)
        return
    for key in ("id", "task", "queue", "state", "priority", "unique_key", "attempted_by"):
        click.echo(f"{key + ':':<14}{decoded[key] if decoded[key] is not None else '-'}")
    if row["workflow_id"] is not None:
        click.echo(f"{'workflow:':<14}{row['workflow_id']}, step {row['workflow_step']} ({position}); "
                   f"`pgtasks workflows show {row['workflow_id']}`")
    click.echo(f"{'attempt:':<14}{row['attempt']} of {row['max_attempts']} (claims {row['claims']})")
    click.echo(f"{'args:':<14}{row['args']}")
    click.echo("timings:")
    for key in ("created_at", "run_at", "attempted_at", "finalized_at", "expires_at", "cancel_requested_at"):
        if row[key] is not None:
            click.echo(f"  {key:<20}{row[key].isoformat(timespec='milliseconds')}")
    click.echo(f"  {'waited':<20}{human_duration(row['wait_seconds'])} (created -> last attempt started)")
    click.echo(f"  {'ran':<20}{human_duration(row['run_seconds'])} (last attempt started -> finished)")
    _show_progress(row["progress"])
    if row["result"] is not None:
        click.echo(f"{'result:':<14}{row['result']}")
    errors = decoded["errors"] or []
    click.echo(f"errors: {len(errors)}")
    for entry in errors:
        click.echo(f"  attempt {entry.get('attempt')} at {entry.get('at')}: "
                   f"{entry.get('type')}: {entry.get('message')}")
        if entry.get("traceback"):
            click.echo("    " + entry["traceback"].rstrip().replace("\n", "\n    "))


def _position(app: App, row: dict[str, Any]) -> str | None:
    """Where a workflow step sits in its workflow (`chain[1] > group[0]`); None for a plain job."""
    if row["workflow_id"] is None:
        return None
    with app.connect() as conn:
        workflow = app.store.workflow_get(conn, row["workflow_id"])
    if workflow is None:
        return "its workflow was deleted"
    if row["workflow_step"] >= workflow["steps"]:
        return "link_error"
    return step_paths(msgspec.json.decode(workflow["structure"])).get(row["workflow_step"], "?")


@jobs.command("retry")
@click.argument("job_ids", type=int, nargs=-1)
@state_option
@queue_option
@task_option
@json_option
@click.pass_context
def retry(ctx: click.Context, job_ids: tuple[int, ...], states: tuple[str, ...], queues: tuple[str, ...],
          tasks: tuple[str, ...], as_json: bool) -> None:
    """Run jobs again now: by ID, or in bulk by filter (e.g. --state discarded --task X).

    Finished, scheduled and retryable jobs become available; running and available ones are left
    alone. A bulk retry needs at least one filter and runs in batches of 1000.
    """
    app = _app(ctx)
    state_list, queue_list, task_list = _states(states), split_csv(queues), split_csv(tasks)
    if not job_ids and not (state_list or queue_list or task_list):
        raise click.UsageError("give job IDs, or a filter (--state / --queue / --task) for a bulk retry")
    channel = jobs_channel(app.schema)
    retried: list[int] = []
    with app.connect() as conn:
        task_list = _tasks(app, conn, tasks)
        if job_ids:
            retried = app.store.job_retry_many(conn, ids=list(job_ids), states=state_list, queues=queue_list,
                                               tasks=task_list, limit=len(job_ids), channel=channel)
        else:
            retryable = state_list or [*FINAL, JobState.RETRYABLE, JobState.SCHEDULED]
            total = app.store.job_count_filtered(conn, states=retryable, queues=queue_list, tasks=task_list)

            def retry_batch() -> int:
                batch = app.store.job_retry_many(conn, states=state_list, queues=queue_list, tasks=task_list,
                                                 limit=BATCH, channel=channel)
                retried.extend(batch)
                return len(batch)

            _in_batches("retrying", total, retry_batch, hidden=as_json)
    skipped = sorted(set(job_ids) - set(retried))
    if as_json:
        emit_json({"retried": retried, "skipped": skipped})
    else:
        click.echo(f"retried {len(retried)} job(s)" + (f": {', '.join(map(str, retried))}" if retried and job_ids
                                                       else ""))
        if skipped:
            click.echo(f"not retried (unknown, running or available, or its unique_key is taken): "
                       f"{', '.join(map(str, skipped))}", err=True)
    if not retried:
        ctx.exit(EXIT_NOT_FOUND)


@jobs.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--reason", default="cancelled by an operator", show_default=True, help="Recorded in the job's errors.")
@json_option
@click.pass_context
def cancel(ctx: click.Context, job_ids: tuple[int, ...], reason: str, as_json: bool) -> None:
    """Cancel jobs. Waiting ones end cancelled at once; running ones are told to stop (an async
    task is cancelled, a sync task sees current_job().cancelled) and end cancelled."""
    app = _app(ctx)
    with app.connect() as conn:
        done = app.store.job_cancel_many(conn, list(job_ids), reason=reason, control=control_channel(app.schema))
    missing = sorted(set(job_ids) - set(done))
    if as_json:
        emit_json({"cancelled": sorted(i for i, o in done.items() if o == "cancelled"),
                   "cancel_requested": sorted(i for i, o in done.items() if o == "cancel_requested"),
                   "not_cancellable": missing})
    else:
        for job_id, outcome in sorted(done.items()):
            click.echo(f"job {job_id}: " + ("cancelled" if outcome == "cancelled"
                                            else "running; its worker was told to stop it"))
        if missing:
            click.echo(f"not cancelled (unknown or already finished): {', '.join(map(str, missing))}", err=True)
    if not done:
        ctx.exit(EXIT_NOT_FOUND)


@jobs.command("purge")
@state_option
@queue_option
@task_option
@click.option("--older-than", "older_than", default=None, metavar="DURATION",
              help="Only jobs finished (or, if unfinished, created) longer ago than this: 90s, 15m, 12h, 7d.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def purge(ctx: click.Context, states: tuple[str, ...], queues: tuple[str, ...], tasks: tuple[str, ...],
          older_than: str | None, yes: bool, as_json: bool) -> None:
    """Delete jobs by filter (default: completed, cancelled and discarded ones); never running jobs.

    Asks for confirmation unless --yes; without a terminal to ask, it refuses (exit 1).
    """
    app = _app(ctx)
    state_list = _states(states) or FINAL
    if JobState.RUNNING in state_list:
        raise click.BadParameter("running jobs cannot be purged; cancel them first", param_hint="--state")
    seconds = parse_duration(older_than) if older_than else None
    queue_list = split_csv(queues)
    with app.connect() as conn:
        task_list = _tasks(app, conn, tasks)
        total = app.store.job_count_purgeable(conn, states=state_list, queues=queue_list, tasks=task_list,
                                              older_than=seconds)
        if total == 0:
            if as_json:
                emit_json({"deleted": 0})
            else:
                click.echo("no job matches; nothing to purge")
            ctx.exit(EXIT_NOT_FOUND)
        if not yes:
            prompt = f"delete {total} job(s) in states {', '.join(state_list)}?"
            if not sys.stdin.isatty():
                fail(f"refusing to {prompt[:-1]} without confirmation: pass --yes", kind="Refused")
            click.confirm(prompt, abort=True, err=True)
        deleted = _in_batches("purging", total, lambda: app.store.job_purge_many(
            conn, states=state_list, queues=queue_list, tasks=task_list, older_than=seconds, limit=BATCH),
            hidden=as_json)
    if as_json:
        emit_json({"deleted": deleted})
    else:
        click.echo(f"deleted {deleted} job(s)")
