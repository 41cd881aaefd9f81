"""`pgtasks queues`: per-queue counts and lag, and pausing / resuming a queue for every worker."""

from __future__ import annotations

from typing import Any

import click

from pgtasks.app import App
from pgtasks.cli.base import CliState
from pgtasks.cli.output import emit_json, human_duration, json_option, table
from pgtasks.cli.watch import watch_option, watched
from pgtasks.core.channels import jobs_channel
from pgtasks.core.options import validate_queue


def _app(ctx: click.Context) -> Any:
    return ctx.find_object(CliState).app()  # type: ignore[union-attr]


@click.group()
def queues() -> None:
    """Queue depth and lag; pause and resume queues (honoured by every worker at its next fetch)."""


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
        emit_json([{**row, "paused": row["paused_at"] is not None} for row in rows])
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
        paused_at = app.store.queue_pause(conn, name)
    if as_json:
        emit_json({"queue": name, "paused": True, "paused_at": paused_at})
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
        was_paused = app.store.queue_resume(conn, name, channel=jobs_channel(app.schema))
    if as_json:
        emit_json({"queue": name, "paused": False, "was_paused": was_paused})
    else:
        click.echo(f"queue {name} resumed" if was_paused else f"queue {name} was not paused")
