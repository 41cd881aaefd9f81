"""`pgtasks periodic`: the app's schedules with their last and next fire times."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pgtasks.cli.base import CliState


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment is not None else "never"


@click.command()
@click.pass_context
def periodic(ctx: click.Context) -> None:
    """List periodic schedules: task, schedule, catch-up policy, last fire and next fire."""
    app = ctx.find_object(CliState).app(required=True)  # type: ignore[union-attr]
    schedules = sorted(app.schedules.values(), key=lambda s: s.name)
    with app.connect() as conn:
        fires = app.store.periodic_last_fires(conn, [s.name for s in schedules])
        recorded = app.store.periodic_schedule_names(conn)
    now = datetime.now(UTC)
    if not schedules:
        click.echo(f"{app.schema}: the app defines no periodic schedules (@app.periodic)")
    for schedule in schedules:
        fire = fires.get(schedule.name)
        last_enqueued = fire.enqueued_time if fire is not None else None
        cursor = fire.last_time if fire is not None else None
        # The next tick after the newest record, or (never seen yet) after now; overdue ones show as such.
        upcoming = schedule.next_after(cursor if cursor is not None else now)
        overdue = " (due)" if upcoming <= now else ""
        job = f" job {fire.enqueued_job_id}" if fire is not None and fire.enqueued_job_id is not None else ""
        click.echo(f"{schedule.name}\n  task:      {schedule.task.name}\n  schedule:  {schedule.spec}\n"
                   f"  catch-up:  {schedule.catch_up}"
                   + (f" (limit {schedule.catch_up_limit})" if schedule.catch_up == "all" else "")
                   + f"\n  overlap:   {'allowed' if schedule.overlap else 'skip ticks while a run is unfinished'}"
                   + f"\n  last fire: {_when(last_enqueued)}{job}\n  next fire: {_when(upcoming)}{overdue}")
    gone = sorted(set(recorded) - {s.name for s in schedules})
    if gone:
        click.echo("fire records of schedules this app no longer defines: " + ", ".join(gone))
