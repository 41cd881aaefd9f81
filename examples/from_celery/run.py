"""A Celery-shaped project on pgtasks: tasks in several modules of a package, found by include= and
autodiscover(); retries on some exceptions only; a beat schedule of crontab()s; a web app that
enqueues by name and reads results back from stored ids.

Run it with `python examples/from_celery/run.py`. With no PGTASKS_DATABASE_URL set it uses the
embedded PostgreSQL of the project (as examples/quickstart.py does). It enqueues orders as the web
app would, then runs what a worker would run (`pgtasks.testing.drain`, a burst worker in this
process) and prints what happened. In production the worker is:

    cd examples/from_celery && pgtasks -A bookshop.app worker -Q default,billing,mail -l info

Layout (Celery's in brackets):

    bookshop/app.py            the App, include= and autodiscover()   [proj/celery.py]
    bookshop/beat.py           crontab() schedules                     [app.conf.beat_schedule]
    bookshop/billing/tasks.py  a Blueprint, retry_on=, on_failure=     [@shared_task(autoretry_for=...)]
    bookshop/mail/tasks.py     a Blueprint, rate_limit=                [@shared_task(rate_limit=...)]
    bookshop/reports/tasks.py  @app.task on the imported App           [from proj.celery import app]
    bookshop/shopfront.py      send_task() by name, JobRef.from_id()   [send_task, AsyncResult(id)]
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from bookshop import shopfront
from bookshop.app import app
from bookshop.reports.tasks import weekly_sales
from bookshop.shopfront import web

import pgtasks
from pgtasks.testing import drain

QUEUES = ["default", "billing", "mail"]  # what `pgtasks worker -Q default,billing,mail` serves


def reset() -> None:
    """A clean slate, so a second run prints the same ids."""
    app.migrate()
    with app.transaction() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {shopfront.orders_table()}")
        conn.execute(f"CREATE TABLE {shopfront.orders_table()} (id serial PRIMARY KEY, email text NOT NULL, "
                     f"cents int NOT NULL, charge_job_id bigint)")
        conn.execute(f'TRUNCATE "{app.schema}".jobs, "{app.schema}".workflows RESTART IDENTITY CASCADE')


def show_beat() -> None:
    start = datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    for name, schedule in sorted(app.schedules.items()):
        fires, moment = [], start
        for _ in range(3):
            moment = schedule.next_after(moment)
            fires.append(moment.astimezone(schedule.timezone).strftime("%Y-%m-%d %H:%M"))
        print(f"beat {name}: {schedule.spec} -> {', '.join(fires)}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    reset()
    where = "embedded PostgreSQL" if app.is_embedded else "PGTASKS_DATABASE_URL"
    print(f"database: {where}, schema {app.schema}")
    # The worker imports include= and autodiscover() modules when it starts; app.tasks does too.
    print(f"tasks: {', '.join(sorted(app.tasks))}")
    show_beat()

    orders = [shopfront.place_order("ann@example.com", 1250),   # charged at once
              shopfront.place_order("bob@example.com", 7400),   # the gateway times out once: retried
              shopfront.place_order("cat@example.com", 2013)]   # declined: not retried
    try:
        shopfront.place_order("dan@example.com", 990, in_stock=False)
    except shopfront.OutOfStock as exc:
        print(f"rolled back: {exc} -> no order, no charge, no receipt")
    visit = shopfront.track_visit("/books/42")
    for order_id in orders:
        print(shopfront.order_page(order_id))

    print("worker:")
    for attempt in sorted(drain(app, queues=QUEUES, with_scheduled=True), key=lambda o: (o.id, o.attempt)):
        print(f"  job {attempt.id} {attempt.task:<18} attempt {attempt.attempt} {attempt.state}"
              + (f" ({attempt.error})" if attempt.error else ""))

    for order_id in orders:
        print(shopfront.order_page(order_id))
    with app.connect() as conn:
        receipts = conn.execute(f"""SELECT id, state::text, coalesce(result #>> '{{}}', errors -> -1 ->> 'message')
                                    FROM "{app.schema}".jobs WHERE task = 'mail.send_receipt' ORDER BY id""").fetchall()
    for job_id, state, detail in receipts:
        print(f"receipt job {job_id}: {state}: {detail}")
    waiting = pgtasks.JobRef.from_id(web, visit.id)
    job = web.get_job(visit.id)
    assert job is not None
    print(f"{waiting.task}: {waiting.state()} attempts={job['attempt']} (no worker here defines it)")

    # An operator runs the weekly report now instead of waiting for Monday 07:00.
    report = weekly_sales.delay()
    drain(app, queues=QUEUES)
    totals = pgtasks.JobRef.from_id(web, report.id).result   # plain JSON here: web does not define the task
    print("weekly sales: " + ", ".join(f"{key}={totals[key]}" for key in ("orders", "paid", "cents")))
    web.close()
    app.close()


if __name__ == "__main__":
    main()
