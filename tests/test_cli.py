"""Acceptance tests: the `pgtasks` command as users run it, in subprocesses, against a real PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgtasks import App
from pgtasks.cli import main
from tests.conftest import ROOT
from tests.helpers import jobs, wait_for


@pytest.fixture
def enqueuer(app: App) -> App:
    """An App in the test process with the same task names as tests/apps/slow_app.py."""

    @app.task(name="slow.sleep")
    def sleep(seconds: float) -> float:
        return seconds

    @app.task(name="slow.asleep")
    async def asleep(seconds: float) -> float:
        return seconds

    return app


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgtasks", "--app", "tests.apps.slow_app:app", "worker", "--poll-interval", "0.1",
         *args],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_migrate_commands(database_url: str, schema: str) -> None:
    runner = CliRunner()
    base = ["--database-url", database_url, "--schema", schema]
    status = runner.invoke(main, [*base, "migrate", "status"])
    assert status.exit_code == 1 and "pending" in status.output
    dry = runner.invoke(main, [*base, "migrate", "--dry-run"])
    assert dry.exit_code == 0 and f'CREATE TABLE "{schema}".jobs' in dry.output
    assert runner.invoke(main, [*base, "migrate", "status"]).exit_code == 1  # dry run changed nothing
    applied = runner.invoke(main, [*base, "migrate"])
    assert applied.exit_code == 0 and "applied 0001_jobs" in applied.output
    again = runner.invoke(main, [*base, "migrate"])
    assert again.exit_code == 0 and "up to date" in again.output
    assert runner.invoke(main, [*base, "migrate", "status"]).exit_code == 0


def test_worker_needs_an_app_and_a_migrated_schema(env: dict[str, str], schema: str) -> None:
    no_app = subprocess.run([sys.executable, "-m", "pgtasks", "worker"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert no_app.returncode == 2 and "--app module:attribute" in no_app.stderr
    unmigrated = subprocess.run(
        [sys.executable, "-m", "pgtasks", "--app", "tests.apps.slow_app:app", "worker", "--burst"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert unmigrated.returncode == 2
    assert "run `pgtasks migrate`" in unmigrated.stderr


def test_worker_process_runs_jobs_and_stops_gracefully_on_sigterm(
    enqueuer: App, env: dict[str, str], conn: psycopg.Connection[Any], reap: list[subprocess.Popen[str]]
) -> None:
    sleep = enqueuer.tasks["slow.sleep"]
    worker = start_worker(env, "--grace", "20")
    reap.append(worker)
    sleep.delay(0.0)
    wait_for(lambda: jobs(conn, enqueuer.schema)[0]["state"] == "completed", timeout=30)
    sleep.delay(1.5)
    wait_for(lambda: jobs(conn, enqueuer.schema)[1]["state"] == "running", timeout=30)
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    row = jobs(conn, enqueuer.schema)[1]
    assert (row["state"], row["result"]) == ("completed", 1.5)  # finished within the grace period
    assert "worker.stopping" in output and "job.completed" in output and "worker.stopped" in output


def test_second_signal_exits_at_once_and_puts_the_job_back(
    enqueuer: App, env: dict[str, str], conn: psycopg.Connection[Any], reap: list[subprocess.Popen[str]]
) -> None:
    asleep = enqueuer.tasks["slow.asleep"]
    worker = start_worker(env, "--grace", "120")
    reap.append(worker)
    asleep.delay(120.0)
    wait_for(lambda: jobs(conn, enqueuer.schema)[0]["state"] == "running", timeout=30)
    worker.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert worker.poll() is None  # still inside the grace period
    worker.send_signal(signal.SIGINT)
    output, _ = worker.communicate(timeout=15)
    assert worker.returncode == 0, output
    row = jobs(conn, enqueuer.schema)[0]
    assert (row["state"], row["attempt"]) == ("available", 0)
    assert row["errors"][-1]["type"] == "WorkerShutdown"
    assert "worker.forced_stop" in output and "worker.jobs_put_back" in output
