"""Every example in examples/ runs, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys

from pgtasks import App
from tests.conftest import ROOT


def run_example(path: str, app: App, database_url: str) -> subprocess.CompletedProcess[str]:
    """Run `python <path>` as a user would, on the test database and the app fixture's schema; it must exit 0."""
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema}
    result = subprocess.run([sys.executable, path], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_quickstart_demo(app: App, database_url: str) -> None:
    result = run_example("examples/quickstart.py", app, database_url)
    out = result.stdout
    assert "rolled back: payment declined for bob@example.com" in out
    assert "quickstart.send_welcome_email    completed  attempts=2" in out
    assert "quickstart.add                   completed  attempts=1 result=5" in out
    assert "users: ['alice@example.com']" in out
    assert "job.retrying" in result.stderr and "job.completed" in result.stderr


def test_periodic_example(app: App, database_url: str) -> None:
    result = run_example("examples/periodic.py", app, database_url)
    runs = {line.split()[0]: (line.split()[1], int(line.split()[2])) for line in result.stdout.splitlines()}
    assert runs["periodic.heartbeat"][0] == "completed" and 3 <= runs["periodic.heartbeat"][1] <= 5
    assert runs["periodic.cron_two_seconds"][0] == "completed" and 1 <= runs["periodic.cron_two_seconds"][1] <= 3


def test_workflows_example(app: App, database_url: str) -> None:
    result = run_example("examples/workflows.py", app, database_url)
    out = result.stdout.splitlines()
    assert "chain(chord, report) -> 'pages: 9 words'" in out
    assert "group -> [4, 2, 3]" in out
    assert "broken -> failed: ValueError: invalid literal for int() with base 10: 'x'" in out
    assert sum(line.startswith("alert: job ") for line in out) == 1
    assert [line.split()[3] for line in out if line.startswith("  step ")] == ["discarded", "cancelled", "completed"]
    assert any(line.startswith("rolled back: workflow ") and line.endswith("state=None") for line in out)


def test_limits_example(app: App, database_url: str) -> None:
    result = run_example("examples/limits.py", app, database_url)
    out = result.stdout.splitlines()
    assert "exports: at most 2 at once (limit 2)" in out
    assert "customer 1: at most 1 at once (limit 1 per customer)" in out
    assert "customer 2: at most 1 at once (limit 1 per customer)" in out
    notify = next(line for line in out if line.startswith("notify: "))
    assert notify.startswith("notify: 6 started, about 0.2 s apart at least") or \
        notify.startswith("notify: 6 started, about 0.3 s apart at least"), notify


def test_from_celery_example(app: App, database_url: str) -> None:
    """examples/from_celery/: a Celery-shaped package (Blueprints in several modules, include= and
    autodiscover(), retry_on, crontab() beat schedules, send_task by name, JobRef.from_id) runs, and
    `pgtasks -A bookshop.app` finds its tasks and schedules as a Celery user would spell it."""
    result = run_example("examples/from_celery/run.py", app, database_url)
    out = result.stdout.splitlines()
    assert ("tasks: billing.charge, billing.invoice_overdue, mail.send_receipt, mail.send_statements, "
            "reports.weekly_sales") in out
    # Celery's crontab meaning: the first Monday of each month, in the App's time zone.
    assert ("beat monthly-statements: crontab(minute='0', hour='6', day_of_week='mon', day_of_month='1-7') "
            "Europe/Paris -> 2024-01-01 06:00, 2024-02-05 06:00, 2024-03-04 06:00") in out
    assert "rolled back: out of stock for dan@example.com -> no order, no charge, no receipt" in out
    assert "order 1 ann@example.com 12.50 EUR: payment pending (available)" in out
    # Retried on ConnectionError only: the timeout ran twice, the declined card once.
    assert [line.split(maxsplit=1)[1] for line in out if line.startswith("  job ")] == [
        "1 billing.charge     attempt 1 completed",
        "2 mail.send_receipt  attempt 1 completed",
        "3 billing.charge     attempt 1 retryable (ConnectionError: payment gateway timed out)",
        "3 billing.charge     attempt 2 completed",
        "4 mail.send_receipt  attempt 1 completed",
        "5 billing.charge     attempt 1 discarded (CardDeclined: card declined for order 3)",
    ]
    assert "order 1 ann@example.com 12.50 EUR: paid ch_1_1250 (attempts 1)" in out
    assert "order 2 bob@example.com 74.00 EUR: paid ch_2_7400 (attempts 2)" in out
    assert "order 3 cat@example.com 20.13 EUR: declined: card declined for order 3 (attempts 1)" in out
    assert "receipt job 2: completed: receipt for order 1 (ch_1_1250) sent to ann@example.com" in out
    assert sum(line.startswith("receipt job ") for line in out) == 3  # none for the order rolled back
    assert any(line.startswith("receipt job 6: cancelled: workflow ") and "ended discarded: CardDeclined" in line
               for line in out)
    assert "analytics.track_visit: available attempts=0 (no worker here defines it)" in out
    assert "weekly sales: orders=3, paid=2, cents=8650" in out
    assert "charge failed for good: order 3: CardDeclined('card declined for order 3')" in result.stderr

    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema}
    periodic = subprocess.run([sys.executable, "-m", "pgtasks", "-A", "bookshop.app", "periodic"],
                              cwd=ROOT / "examples" / "from_celery", env=env, capture_output=True, text=True,
                              timeout=120)
    assert periodic.returncode == 0, periodic.stdout + periodic.stderr
    assert "  schedule:  crontab(minute='30', hour='2') Europe/Paris" in periodic.stdout
    assert "  jobs:      queue billing, priority 0, expires 3600 s after enqueue" in periodic.stdout
    assert periodic.stdout.count("  task:      ") == 3
