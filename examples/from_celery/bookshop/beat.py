"""The beat schedule (Celery: `app.conf.beat_schedule`), listed in `App(include=[...])`.

Celery:

    app.conf.beat_schedule = {
        "nightly-invoices": {"task": "billing.invoice_overdue", "schedule": crontab(minute=30, hour=2),
                             "options": {"expires": 3600}},
        "monthly-statements": {"task": "mail.send_statements",
                               "schedule": crontab(minute=0, hour=6, day_of_week="mon", day_of_month="1-7")},
    }

There is no beat process: the elected leader among the running workers enqueues each tick once.
`crontab()` keeps Celery's meaning: day_of_week AND day_of_month, so "monthly-statements" runs on
the first Monday of each month (the cron string "0 6 1-7 * 1" would run on every Monday and on
the 1st to the 7th). The App's timezone (Europe/Paris) applies.
"""

from __future__ import annotations

from bookshop.app import app
from bookshop.billing import tasks as billing
from bookshop.mail import tasks as mail
from pgtasks import crontab

app.periodic(cron=crontab(minute=30, hour=2), name="nightly-invoices", expires=3600)(billing.invoice_overdue)
app.periodic(cron=crontab(minute=0, hour=6, day_of_week="mon", day_of_month="1-7"),
             name="monthly-statements")(mail.send_statements)
