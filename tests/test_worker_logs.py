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
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgtasks import App, Fixed
from pgtasks.cli import main
from pgtasks.core.logs import JsonFormatter
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
    # As libpq resolves it (a Unix-socket DSN names no port, the default applies).
    with psycopg.connect(target.dsn) as probe:
        info = probe.info
        where = f"{info.user}@{info.host}:{info.port}/{info.dbname}"
    assert str(conninfo_to_dict(target.dsn)["dbname"]) in where

    text = burst_worker(dsn, app.schema)
    as_json = burst_worker(dsn, app.schema, "--log-format", "json")

    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    assert "not-for-logs" not in text.stderr + as_json.stderr
    lines = {line.split()[4]: line.split(": ", 1)[1] for line in text.stderr.splitlines()}
    connections, started = lines["worker.connections"], lines["worker.started"]
    # Each field is one token: no value with spaces or '=' in it (the old lines had both).
    for line in (connections, started):
        assert all(token.count("=") == 1 for token in line.split()[1:]), line
        assert len(line.replace(where, "")) < 140, line  # a Unix socket's path may be long; the rest is not
    assert started.endswith(f" database={where}")

    records = events(as_json.stderr)
    listens = target.mode.value != "transaction"
    assert records["worker.connections"] == {
        "worker_id": records["worker.started"]["worker_id"], "database_mode": target.mode.value, "pool": 4,
        "listener_mode": target.mode.value if listens else "none", "server_connections_max": 4 + listens,
        "prepared": "on" if target.name == "direct" else "off"}
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


# -- tracebacks start at the user's code ------------------------------------------------------------


def check_input(value: int) -> None:
    raise ValueError(f"bad value {value}")


def stored_traceback(conn: psycopg.Connection[Any], schema: str, job_id: int) -> str:
    row = conn.execute(f'SELECT errors FROM "{schema}".jobs WHERE id = %s', (job_id,)).fetchone()
    assert row is not None
    [entry] = row[0]
    return str(entry["traceback"])


def frames(traceback_text: str) -> list[str]:
    """'file:function' of each frame of a formatted traceback."""
    lines = [line for line in traceback_text.splitlines() if line.startswith('  File "')]
    return [Path(line.split('"')[1]).name + ":" + line.rsplit(" in ", 1)[1] for line in lines]


def test_tracebacks_in_jobs_show_and_the_log_start_at_the_task(
        app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")

    @app.task(name="logs.sync_fails", max_attempts=1)
    def sync_fails(value: int) -> None:
        check_input(value)

    @app.task(name="logs.async_fails", max_attempts=1)
    async def async_fails(value: int) -> None:
        check_input(value)

    @app.task(name="logs.misconfigures", max_attempts=1)
    def misconfigures() -> None:
        Fixed(-1)  # fails inside pgtasks, called by the task: those frames stay

    sync_job, async_job, misconfigured = sync_fails.delay(1).id, async_fails.delay(2).id, misconfigures.delay().id
    drain(app)

    assert frames(stored_traceback(conn, app.schema, sync_job)) == [
        "test_worker_logs.py:sync_fails", "test_worker_logs.py:check_input"]
    assert frames(stored_traceback(conn, app.schema, async_job)) == [
        "test_worker_logs.py:async_fails", "test_worker_logs.py:check_input"]
    assert frames(stored_traceback(conn, app.schema, misconfigured)) == [
        "test_worker_logs.py:misconfigures", "<string>:__init__", "retry.py:__post_init__"]  # a dataclass

    shown = CliRunner().invoke(main, ["--database-url", app.dsn, "--schema", app.schema, "jobs", "show",
                                      str(sync_job)])
    assert shown.exit_code == 0, shown.output
    output = shown.output.splitlines()
    tail = output[output.index("    Traceback (most recent call last):"):]
    assert tail[1].strip().endswith(", in sync_fails") and tail[-1] == "    ValueError: bad value 1"

    # The discard's log line carries the same traceback, under the line (text) or as `exception` (JSON).
    [record] = [r for r in caplog.records if r.__dict__.get("event") == "job.discarded"
                and r.__dict__["fields"]["job_id"] == sync_job]
    assert record.exc_text == stored_traceback(conn, app.schema, sync_job).rstrip("\n")
    text = logging.Formatter("%(message)s").format(record)
    assert text.splitlines()[0].startswith(f"job.discarded job_id={sync_job} ")
    assert text.splitlines()[1:] == record.exc_text.splitlines()
    assert json.loads(JsonFormatter().format(record))["exception"] == record.exc_text
