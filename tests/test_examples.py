"""Every example in examples/ runs, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys

from pgtasks import App
from tests.conftest import ROOT


def test_quickstart_demo(app: App, database_url: str) -> None:
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema}
    result = subprocess.run([sys.executable, "examples/quickstart.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "rolled back: payment declined for bob@example.com" in out
    assert "quickstart.send_welcome_email    completed  attempts=2" in out
    assert "quickstart.add                   completed  attempts=1 result=5" in out
    assert "users: ['alice@example.com']" in out
    assert "job.retrying" in result.stderr and "job.completed" in result.stderr


def test_periodic_example(app: App, database_url: str) -> None:
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema}
    result = subprocess.run([sys.executable, "examples/periodic.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = {line.split()[0]: (line.split()[1], int(line.split()[2])) for line in result.stdout.splitlines()}
    assert runs["periodic.heartbeat"][0] == "completed" and 3 <= runs["periodic.heartbeat"][1] <= 5
    assert runs["periodic.cron_two_seconds"][0] == "completed" and 1 <= runs["periodic.cron_two_seconds"][1] <= 3


def test_workflows_example(app: App, database_url: str) -> None:
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema}
    result = subprocess.run([sys.executable, "examples/workflows.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert "chain(chord, report) -> 'pages: 9 words'" in out
    assert "group -> [4, 2, 3]" in out
    assert "broken -> failed: ValueError: invalid literal for int() with base 10: 'x'" in out
    assert sum(line.startswith("alert: job ") for line in out) == 1
    assert [line.split()[3] for line in out if line.startswith("  step ")] == ["discarded", "cancelled", "completed"]
    assert any(line.startswith("rolled back: workflow ") and line.endswith("state=None") for line in out)


def test_limits_example(app: App, database_url: str) -> None:
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema}
    result = subprocess.run([sys.executable, "examples/limits.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert "exports: at most 2 at once (limit 2)" in out
    assert "customer 1: at most 1 at once (limit 1 per customer)" in out
    assert "customer 2: at most 1 at once (limit 1 per customer)" in out
    notify = next(line for line in out if line.startswith("notify: "))
    assert notify.startswith("notify: 6 started, about 0.2 s apart at least") or \
        notify.startswith("notify: 6 started, about 0.3 s apart at least"), notify
