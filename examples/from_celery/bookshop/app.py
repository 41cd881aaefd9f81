"""The App, where a Celery project has `proj/celery.py`.

Celery:

    app = Celery("bookshop", broker=..., backend=..., include=["bookshop.beat"])
    app.conf.timezone = "Europe/Paris"
    app.autodiscover_tasks(["bookshop.billing", "bookshop.mail", "bookshop.reports"])

pgtasks: one database URL for the queue and the results (PGTASKS_DATABASE_URL, else an embedded
PostgreSQL), the same include= and autodiscovery, and the time zone of cron schedules. This module
imports no tasks module: the worker (`pgtasks -A bookshop.app worker -Q default,billing,mail`)
imports them when it starts, so the tasks modules may import this App.
"""

from __future__ import annotations

import pgtasks

app = pgtasks.App(include=["bookshop.beat"], timezone="Europe/Paris")
app.autodiscover(["bookshop.billing", "bookshop.mail", "bookshop.reports"])
