"""`pgtasks stats`: jobs per state, per queue (with its limits), and per task over a recent window."""

from __future__ import annotations

import click

from pgtasks.app import App
from pgtasks.cli.base import CliState
from pgtasks.cli.output import emit_json, human_duration, json_option, parse_duration, queue_json, table
from pgtasks.cli.queues import print_limits
from pgtasks.cli.watch import watch_option, watched
from pgtasks.ops.limits import limits_by_queue


@click.command()
@click.option("--window", default="1h", show_default=True, metavar="DURATION",
              help="How far back the per-task figures look: 15m, 1h, 1d ...")
@json_option
@watch_option
@click.pass_context
def stats(ctx: click.Context, window: str, as_json: bool, watch: float | None) -> None:
    """Totals by state, queue depth and lag, limits, and per-task outcomes and run times in the window."""
    app = ctx.find_object(CliState).app()  # type: ignore[union-attr]
    seconds = parse_duration(window)
    watched(lambda: _print_stats(app, window, seconds, as_json), watch, as_json=as_json)


def _print_stats(app: App, window: str, seconds: float, as_json: bool) -> None:
    with app.connect() as conn:
        by_state = app.store.stats_by_state(conn)
        queues = app.store.queue_stats(conn)
        recent = app.store.stats_recent_by_task(conn, seconds)
        limits = app.store.limits_list(conn)
    if as_json:
        by_queue = limits_by_queue(limits)
        emit_json({"by_state": by_state, "total": sum(by_state.values()),
                   "queues": [{**queue_json(q), "limits": by_queue.get(str(q["queue"]), [])} for q in queues],
                   "window_seconds": seconds, "tasks": recent})
        return
    click.echo(f"jobs: {sum(by_state.values())} in total")
    table(["state", "count"], sorted(by_state.items()))
    click.echo("")
    table(["queue", "available", "running", "lag", "paused"],
          [[q["queue"], q["available"], q["running"], human_duration(q["lag_seconds"]),
            "yes" if q["paused_at"] else "no"] for q in queues])
    print_limits(limits)
    click.echo(f"\nfinished in the last {window}:")
    table(["task", "completed", "discarded", "cancelled", "mean_run", "max_run"],
          [[t["task"], t["completed"], t["discarded"], t["cancelled"], human_duration(t["mean_run_seconds"]),
            human_duration(t["max_run_seconds"])] for t in recent])
