"""`pgtasks workers`: every live worker, what it runs right now, and which one leads (`celery inspect active`)."""

from __future__ import annotations

from typing import Any

import click

from pgtasks.cli.base import CliState
from pgtasks.cli.output import EXIT_NOT_FOUND, emit_json, human_duration, json_option, parse_duration, table
from pgtasks.cli.watch import watch_option, watched

# The rescuer's default rescue_after: a worker silent this long is treated as gone.
DEFAULT_SILENT_AFTER = "60s"


@click.command()
@click.option("--silent-after", default=DEFAULT_SILENT_AFTER, show_default=True, metavar="DURATION",
              help="Hide workers whose last heartbeat is older than this (they crashed or lost the database).")
@click.option("--all", "include_silent", is_flag=True, help="Also list silent workers' rows.")
@json_option
@watch_option
@click.pass_context
def workers(ctx: click.Context, silent_after: str, include_silent: bool, as_json: bool, watch: float | None) -> None:
    """Live workers: host, pid, queues, busy slots, running jobs (id and task), uptime, last heartbeat,
    and the leader. A job claimed ahead of a free slot (short jobs) counts as running. The processes
    of a `worker --processes N` are listed under a line for their supervisor.

    Exit 1 when no worker is listed.
    """
    app = ctx.find_object(CliState).app()  # type: ignore[union-attr]
    seconds = parse_duration(silent_after)

    def render() -> int:
        with app.connect() as conn:
            rows = app.store.worker_status(conn, silent_after=seconds, include_silent=include_silent)
        if as_json:
            emit_json(rows)
        else:
            _print_workers(rows, seconds, schema=app.schema)
        return len(rows)

    listed = watched(render, watch, as_json=as_json)
    if listed == 0:
        ctx.exit(EXIT_NOT_FOUND)


def _print_workers(rows: list[dict[str, Any]], silent_after: float, *, schema: str) -> None:
    if not rows:
        click.echo(f"schema {schema}: no worker has sent a heartbeat in the last {human_duration(silent_after)} "
                   "(start one with `pgtasks --app MODULE:APP worker`)")
        return
    lines: list[list[Any]] = []
    for supervisor, members in _grouped(rows):
        if supervisor is not None:  # a line for the supervisor, its children indented under it
            host, _, pid = supervisor.rpartition(":")
            queues = sorted({q for r in members for q in r["queues"]})
            busy = f"{sum(len(r['running']) for r in members)}/{sum(r['concurrency'] for r in members)}"
            lines.append([f"{supervisor} (supervisor, {len(members)} processes)", host, pid, ",".join(queues),
                          busy, "", "", ""])
        indent = "  " if supervisor is not None else ""
        lines += [[indent + r["worker_id"], r["hostname"], r["pid"], ",".join(r["queues"]),
                   f"{len(r['running'])}/{r['concurrency']}", human_duration(r["uptime_s"]),
                   _heartbeat(r["seen_ago_s"], silent_after), "leader" if r["leader"] else ""] for r in members]
    table(["worker", "host", "pid", "queues", "busy", "uptime", "heartbeat", "leader"], lines)
    running = [(r["worker_id"], job) for r in rows for job in r["running"]]
    click.echo("")
    if not running:
        click.echo("running: none")
        return
    click.echo(f"running: {len(running)}")
    table(["worker", "job", "task", "queue", "attempt", "for"],
          [[worker_id, job["id"], job["task"], job["queue"], job["attempt"], human_duration(job["running_s"])]
           for worker_id, job in running])


def _grouped(rows: list[dict[str, Any]]) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """(supervisor, its children) in the order the rows came, each worker started on its own as
    a group of one under None."""
    groups: list[tuple[str | None, list[dict[str, Any]]]] = []
    by_supervisor: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        supervisor = row.get("supervisor")
        if supervisor is None:
            groups.append((None, [row]))
        elif supervisor in by_supervisor:
            by_supervisor[supervisor].append(row)
        else:
            by_supervisor[supervisor] = [row]
            groups.append((supervisor, by_supervisor[supervisor]))
    return groups


def _heartbeat(seen_ago: float, silent_after: float) -> str:
    ago = f"{human_duration(max(seen_ago, 0.0))} ago"
    return f"{ago} (silent)" if seen_ago > silent_after else ago
