"""`pgtasks periodic`: the app's schedules with their last and next fire times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from pgtasks.cli.base import CliState
from pgtasks.cli.output import emit_json, json_option
from pgtasks.core.models import LastFire
from pgtasks.core.schedules import PeriodicSchedule


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment is not None else "never"


@click.command()
@json_option
@click.pass_context
def periodic(ctx: click.Context, as_json: bool) -> None:
    """List periodic schedules: task, schedule, catch-up policy, last fire and next fire."""
    app = ctx.find_object(CliState).app(required=True)  # type: ignore[union-attr]
    schedules = sorted(app.schedules.values(), key=lambda s: s.name)
    with app.connect() as conn:
        fires = app.store.periodic_last_fires(conn, [s.name for s in schedules])
        recorded = app.store.periodic_schedule_names(conn)
    now = datetime.now(UTC)
    entries = [_entry(schedule, fires.get(schedule.name), now) for schedule in schedules]
    gone = sorted(set(recorded) - {s.name for s in schedules})
    if as_json:
        emit_json({"schema": app.schema, "schedules": entries, "undefined_fire_records": gone})
        return
    if not schedules:
        click.echo(f"{app.schema}: the app defines no periodic schedules (@app.periodic)")
    for entry in entries:
        click.echo(_text(entry))
    if gone:
        click.echo("fire records of schedules this app no longer defines: " + ", ".join(gone))


def _entry(schedule: PeriodicSchedule, fire: LastFire | None, now: datetime) -> dict[str, Any]:
    """One schedule as --json prints it (the text form is drawn from the same dict)."""
    cursor = fire.last_time if fire is not None else None
    # The next tick after the newest record, or (never seen yet) after now; overdue ones show as such.
    upcoming = schedule.next_after(cursor if cursor is not None else now)
    return {"name": schedule.name, "task": schedule.task.name, "schedule": schedule.spec,
            "catch_up": schedule.catch_up,
            "catch_up_limit": schedule.catch_up_limit if schedule.catch_up == "all" else None,
            "overlap": schedule.overlap, "queue": schedule.row.queue, "priority": schedule.row.priority,
            "expires_in": schedule.row.expires_in, "last_fire": fire.enqueued_time if fire is not None else None,
            "last_job_id": fire.enqueued_job_id if fire is not None else None,
            "next_fire": upcoming, "due": upcoming <= now}


def _text(entry: dict[str, Any]) -> str:
    limit = f" (limit {entry['catch_up_limit']})" if entry["catch_up_limit"] is not None else ""
    job = f" job {entry['last_job_id']}" if entry["last_job_id"] is not None else ""
    overlap = "allowed" if entry["overlap"] else "skip ticks while a run is unfinished"
    expires = f", expires {entry['expires_in']:g} s after enqueue" if entry["expires_in"] is not None else ""
    return (f"{entry['name']}\n  task:      {entry['task']}\n  schedule:  {entry['schedule']}\n"
            f"  jobs:      queue {entry['queue']}, priority {entry['priority']}{expires}\n"
            f"  catch-up:  {entry['catch_up']}{limit}\n  overlap:   {overlap}\n"
            f"  last fire: {_when(entry['last_fire'])}{job}\n"
            f"  next fire: {_when(entry['next_fire'])}{' (due)' if entry['due'] else ''}")
