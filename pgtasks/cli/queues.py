"""`pgtasks queues`: per-queue counts and lag; pausing, resuming and removing a queue for every worker."""

from __future__ import annotations

from typing import Any

import click
from psycopg import Connection

from pgtasks.app import App
from pgtasks.cli.base import CliState
from pgtasks.cli.output import EXIT_NOT_FOUND, emit_json, human_duration, json_option, queue_json, table
from pgtasks.cli.watch import watch_option, watched
from pgtasks.core.channels import jobs_channel
from pgtasks.core.options import validate_queue
from pgtasks.ops.queues import in_use, queue_uses, used_names


def _app(ctx: click.Context) -> Any:
    return ctx.find_object(CliState).app()  # type: ignore[union-attr]


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def queues(ctx: click.Context, as_json: bool) -> None:
    """Queue depth and lag; pause, resume and remove queues (honoured by every worker at its next fetch).

    Alone, `pgtasks queues` lists them, as `pgtasks queues list` does."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_queues, as_json=as_json)


def _unused_warning(app: App, conn: Connection[Any], name: str) -> str | None:
    """A warning when no job, worker or task of the App uses `name` (a typo, most likely), else None."""
    uses = queue_uses(app, conn)
    if in_use(uses, name):
        return None
    known = ", ".join(used_names(uses)) or "none yet"
    # Without --app the CLI has a bare App: the queues the user's tasks declare are unknown to it.
    unknown_tasks = "" if app.registry.tasks else "; pass --app to count the queues your tasks declare"
    return (f"no job, worker or registered task uses queue {name!r} (queues in use: {known}); if it is a typo, "
            f"forget it with `pgtasks queues remove {name}`{unknown_tasks}")


def _warn(warning: str | None) -> None:
    if warning:
        click.echo(f"warning: {warning}", err=True)


@queues.command("list")
@json_option
@watch_option
@click.pass_context
def list_queues(ctx: click.Context, as_json: bool, watch: float | None) -> None:
    """Unfinished jobs per queue and state, lag (age of the oldest due job), and paused or not."""
    app = _app(ctx)
    watched(lambda: _print_queues(app, as_json), watch, as_json=as_json)


def _print_queues(app: App, as_json: bool) -> None:
    with app.connect() as conn:
        rows = app.store.queue_stats(conn)
    if as_json:
        emit_json([queue_json(row) for row in rows])
        return
    table(["queue", "available", "scheduled", "running", "retryable", "lag", "paused"],
          [[r["queue"], r["available"], r["scheduled"], r["running"], r["retryable"], human_duration(r["lag_seconds"]),
            f"since {r['paused_at'].isoformat(timespec='seconds')}" if r["paused_at"] else "no"] for r in rows])


@queues.command("pause")
@click.argument("name")
@json_option
@click.pass_context
def pause(ctx: click.Context, name: str, as_json: bool) -> None:
    """Stop workers from starting jobs of queue NAME (running jobs finish). Idempotent."""
    app = _app(ctx)
    validate_queue(name)
    with app.connect() as conn:
        warning = _unused_warning(app, conn, name)  # read before the pause adds its entry
        paused_at = app.store.queue_pause(conn, name)
    _warn(warning)
    if as_json:
        emit_json({"queue": name, "paused": True, "paused_at": paused_at, "in_use": warning is None})
    else:
        click.echo(f"queue {name} paused (since {paused_at.isoformat(timespec='seconds')}); "
                   "workers start none of its jobs from their next fetch on")


@queues.command("resume")
@click.argument("name")
@json_option
@click.pass_context
def resume(ctx: click.Context, name: str, as_json: bool) -> None:
    """Let workers run queue NAME again, and wake them. Idempotent."""
    app = _app(ctx)
    validate_queue(name)
    with app.connect() as conn:
        warning = _unused_warning(app, conn, name)
        was_paused = app.store.queue_resume(conn, name, channel=jobs_channel(app.schema))
    _warn(warning)
    if as_json:
        emit_json({"queue": name, "paused": False, "was_paused": was_paused})
    else:
        click.echo(f"queue {name} resumed" if was_paused else f"queue {name} was not paused")


@queues.command("remove")
@click.argument("name")
@json_option
@click.pass_context
def remove(ctx: click.Context, name: str, as_json: bool) -> None:
    """Forget queue NAME's entry (its pause state), e.g. a typo given to `queues pause`.

    Refused (exit 1) while NAME is paused with jobs waiting, since removing the entry would resume
    them; a queue with unfinished jobs or workers stays listed until they are gone.
    """
    app = _app(ctx)
    validate_queue(name)
    with app.connect() as conn:
        removal = app.store.queue_remove(conn, name)
        still_used = in_use(queue_uses(app, conn), name)
    if as_json:
        emit_json({"queue": name, "outcome": removal.outcome, "waiting": removal.waiting, "in_use": still_used})
    else:
        click.echo(_removal_message(name, removal.outcome, removal.waiting, still_used),
                   err=removal.outcome != "removed")
    if removal.outcome != "removed":
        ctx.exit(EXIT_NOT_FOUND)


def _removal_message(name: str, outcome: str, waiting: int, still_used: bool) -> str:
    if outcome == "refused":
        return (f"queue {name} is paused with {waiting} job(s) waiting: removing its entry would resume them; "
                f"run `pgtasks queues resume {name}` first, or cancel or purge those jobs")
    listed = (" (it stays in `queues list` while jobs, workers or tasks use it)" if still_used else "")
    if outcome == "absent":
        return f"queue {name} has no entry to remove{listed}"
    return f"queue {name} removed{listed}"
