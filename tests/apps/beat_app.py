"""Schedules written the way a Celery beat schedule is: crontab(), per-schedule queue, priority and
expires, and the App's default time zone. `pgtasks periodic` lists it in tests/test_periodic.py."""

from __future__ import annotations

from datetime import timedelta

import pgtasks
from pgtasks import crontab

app = pgtasks.App(timezone="Europe/Paris")


@app.periodic(cron=crontab(minute=0, hour=0, day_of_week=1, day_of_month="1-7"), name="first-monday",
              queue="reports", priority=5, expires=timedelta(hours=1))
@app.periodic(cron="0 0 1-7 * 1", name="monday-or-first-week")
@app.task(name="beat.report")
def report() -> None: ...
