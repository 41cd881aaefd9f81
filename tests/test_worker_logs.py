"""What the worker logs: short start-up lines, one line per job for outcomes actually recorded, and
tracebacks that start at the user's code."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgtasks import App, Fixed
from pgtasks.testing import drain
from tests.helpers import logged, wait_for, worker_thread
from tests.pgbouncer_fixtures import Target

ROOT = Path(__file__).resolve().parent.parent


def burst_worker(dsn: str, schema: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGTASKS_DATABASE_URL": dsn, "PGTASKS_SCHEMA": schema, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pgtasks", "--app", "tests.apps.results_app:app", "worker",
                           "--burst", "--poll-interval", "0.1", *options],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def state_of(conn: psycopg.Connection[Any], schema: str, job_id: int) -> str | None:
    row = conn.execute(f'SELECT state::text FROM "{schema}".jobs WHERE id = %s', (job_id,)).fetchone()
    return None if row is None else str(row[0])


def events(stderr: str) -> dict[str, dict[str, Any]]:
    """The first JSON log record of each event (--log-format json), without time, level and logger."""
    records: dict[str, dict[str, Any]] = {}
    for line in stderr.splitlines():
        record = json.loads(line)
        records.setdefault(record["event"], {k: v for k, v in record.items()
                                             if k not in ("time", "level", "logger", "event")})
    return records


def test_start_up_lines_are_short_one_value_a_field_and_name_the_database_like_a_url(
        target: Target, app: App) -> None:
    # A password in the DSN (trust auth ignores it) must not reach the logs in any form.
    dsn = make_conninfo(target.dsn, password="not-for-logs")
    params = conninfo_to_dict(target.dsn)
    where = f"{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"

    text = burst_worker(dsn, app.schema)
    as_json = burst_worker(dsn, app.schema, "--log-format", "json")

    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    assert "not-for-logs" not in text.stderr + as_json.stderr
    lines = {line.split()[4]: line.split(": ", 1)[1] for line in text.stderr.splitlines()}
    connections, started = lines["worker.connections"], lines["worker.started"]
    # Each field is one token: no value with spaces or '=' in it (the old lines had both).
    for line in (connections, started):
        assert all(token.count("=") == 1 for token in line.split()[1:]), line
        assert len(line) < 160, line
    assert started.endswith(f" database={where}")

    records = events(as_json.stderr)
    listens = target.mode.value != "transaction"
    assert records["worker.connections"] == {
        "worker_id": records["worker.started"]["worker_id"], "database_mode": target.mode.value, "pool": 4,
        "listener_mode": target.mode.value if listens else "none", "server_connections_max": 4 + listens}
    assert records["worker.started"] == {
        "worker_id": records["worker.connections"]["worker_id"], "queues": "default", "concurrency": 10,
        "tasks": 2, "listen": listens, "poll_interval_s": 0.1, "database": where}


# -- one line per job, for outcomes actually recorded ------------------------------------------------


def test_a_rejected_stale_outcome_logs_only_outcome_rejected(
        target_app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    release = threading.Event()

    @target_app.task(name="logs.held")
    def held() -> str:
        release.wait(60)
        return "stale"

    @target_app.task(name="logs.quick")
    def quick() -> str:
        return "fresh"

    with worker_thread(target_app, concurrency=2, poll_interval=0.1) as worker:
        stale = held.delay().id
        wait_for(lambda: state_of(conn, target_app.schema, stale) == "running", timeout=30)
        # What a rescue followed by a new claim leaves: the row runs under a newer claim, so this
        # attempt's outcome fails the fence when the worker reports it.
        conn.execute(f'UPDATE "{target_app.schema}".jobs SET claims = claims + 1 WHERE id = %s', (stale,))
        release.set()
        fresh = quick.delay().id
        assert worker.completer is not None
        completer = worker.completer
        wait_for(lambda: completer.rejected == 1 and state_of(conn, target_app.schema, fresh) == "completed",
                 timeout=30)

    assert logged(caplog.records, "job.outcome_rejected") == [{"job_id": stale, "claims": 1, "state": "completed"}]
    completed = logged(caplog.records, "job.completed")
    assert [line["job_id"] for line in completed] == [fresh]
    assert completed[0]["task"] == "logs.quick" and completed[0]["attempt"] == 1 and completed[0]["duration_ms"] >= 0
    assert state_of(conn, target_app.schema, stale) == "running"  # the newer claim's row is untouched


def test_each_recorded_outcome_logs_its_one_line_at_its_level(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")

    @app.task(name="logs.flaky", max_attempts=2, retry=Fixed(0))
    def flaky() -> None:
        raise ValueError("not yet")

    job = flaky.delay().id
    drain(app)

    lines = [(r.levelname, r.__dict__["event"], r.__dict__["fields"]) for r in caplog.records
             if r.__dict__.get("event", "").startswith("job.")]
    assert [(level, event, fields["job_id"], fields["attempt"], fields["error"]) for level, event, fields in lines] == [
        ("WARNING", "job.retrying", job, 1, "ValueError: not yet"),
        ("ERROR", "job.discarded", job, 2, "ValueError: not yet")]
    assert lines[0][2]["retry_in_s"] == 0.0
