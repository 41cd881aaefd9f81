"""What the worker logs: short start-up lines, one line per job for outcomes actually recorded, and
tracebacks that start at the user's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgtasks import App
from tests.pgbouncer_fixtures import Target

ROOT = Path(__file__).resolve().parent.parent


def burst_worker(dsn: str, schema: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGTASKS_DATABASE_URL": dsn, "PGTASKS_SCHEMA": schema, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pgtasks", "--app", "tests.apps.results_app:app", "worker",
                           "--burst", "--poll-interval", "0.1", *options],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


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
    dsn = make_conninfo(target.dsn, password="not-for-logs")  # noqa: S106 - a marker, not a secret
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
