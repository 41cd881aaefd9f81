"""`pgtasks queues`: per-queue counts, lag and limits; pausing, resuming, limiting and removing a queue for
every worker."""

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
from pgtasks.ops.limits import (
    LIMIT_HEADERS,
    limit_cells,
    limit_lines,
    limits_by_queue,
    queue_limit_change,
    queue_limits_now,
    set_queue_limits,
)
from pgtasks.ops.queues import in_use, queue_uses, used_names


def _app(ctx: click.Context) -> Any:
    return ctx.find_object(CliState).app()  # type: ignore[union-attr]


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def queues(ctx: click.Context, as_json: bool) -> None:
    """Queue depth, lag and limits; pause, resume, limit and remove queues (honoured by every worker at its
    next fetch).

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
    """Unfinished jobs per queue and state, lag (age of the oldest due job), paused or not, and each
    limit with the jobs running against it, ready, and held back by it."""
    app = _app(ctx)
    watched(lambda: _print_queues(app, as_json), watch, as_json=as_json)


def _print_queues(app: App, as_json: bool) -> None:
    with app.connect() as conn:
        rows = app.store.queue_stats(conn)
        limits = app.store.limits_list(conn)
    if as_json:
        by_queue = limits_by_queue(limits)
        emit_json([{**queue_json(row), "limits": by_queue.get(str(row["queue"]), [])} for row in rows])
        return
    table(["queue", "available", "scheduled", "running", "retryable", "lag", "paused"],
          [[r["queue"], r["available"], r["scheduled"], r["running"], r["retryable"], human_duration(r["lag_seconds"]),
            f"since {r['paused_at'].isoformat(timespec='seconds')}" if r["paused_at"] else "no"] for r in rows])
    print_limits(limits)


def print_limits(rows: list[dict[str, Any]]) -> None:
    """The limits table under the queues table (nothing when no limit is set)."""
    lines = limit_lines(rows)
    if lines:
        click.echo("")
        table(LIMIT_HEADERS, [limit_cells(line) for line in lines])


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


@queues.command("limit")
@click.argument("name")
@click.argument("concurrency", type=int, required=False, metavar="[N]")
@click.option("--rate", default=None, metavar="RATE",
              help="At most RATE jobs start, over every worker: 10/s, 100/m, 5/h (also 30/5m).")
@click.option("--burst", type=int, default=None, metavar="B",
              help="Tokens the rate's bucket holds: how many may start at once (default: a tenth of a "
              "second's worth, at least 1). Only with --rate.")
@click.option("--clear", is_flag=True, help="Remove the queue's limits; with N or --rate, keep only those.")
@click.option("--clear-rate", is_flag=True, help="Remove the rate limit, keep the concurrency.")
@json_option
@click.pass_context
def limit(ctx: click.Context, name: str, concurrency: int | None, rate: str | None, burst: int | None, clear: bool,
          clear_rate: bool, as_json: bool) -> None:
    """Limit queue NAME over every worker: at most N of its jobs running at once, at most --rate starting.

    Takes effect at each worker's next claim (workers are told at once). Values not given are kept;
    alone, NAME prints what is in force."""
    app = _app(ctx)
    change = queue_limit_change(name, concurrency, rate, burst, replace=clear, clear_rate=clear_rate)
    with app.connect() as conn:
        warning = _unused_warning(app, conn, name)
        now = set_queue_limits(app, conn, change) if change.writes else queue_limits_now(app, conn, name)
    _warn(warning)
    if as_json:
        emit_json({**now.json(), "changed": change.writes, "in_use": warning is None})
    elif change.writes:
        click.echo(f"queue {name}: {now.describe()}; workers apply it from their next claim")
    else:
        click.echo(f"queue {name}: {now.describe()}")


@queues.command("remove")
@click.argument("name")
@json_option
@click.pass_context
def remove(ctx: click.Context, name: str, as_json: bool) -> None:
    """Forget queue NAME's entry (its pause state), e.g. a typo given to `queues pause`.

    Refused (exit 1) while NAME is paused with jobs waiting, since removing the entry would resume
    them, and while a limit applies in it; a queue with unfinished jobs or workers stays listed
    until they are gone.
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
    if outcome == "limited":
        return (f"queue {name} has limits (`pgtasks queues list` shows them): its entry holds the queue's own and "
                f"is the lock the claim of a limited queue takes; clear the queue's own with `pgtasks queues limit "
                f"{name} --clear` first (the limits its tasks declare go when a worker starts without them)")
    listed = (" (it stays in `queues list` while jobs, workers or tasks use it)" if still_used else "")
    if outcome == "absent":
        return f"queue {name} has no entry to remove{listed}"
    return f"queue {name} removed{listed}"
