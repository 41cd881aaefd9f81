"""`pgtasks worker --log-format json` in a real worker process: every line a JSON object with the
event and its fields as keys; and a result msgspec cannot encode (`job.result_not_stored`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from typing import Any

import psycopg

from pgtasks import App
from tests.conftest import ROOT
from tests.helpers import jobs


def run_burst_worker(database_url: str, schema: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": schema, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pgtasks", "--app", "tests.apps.results_app:app", "worker",
                           "--burst", "--poll-interval", "0.1", *options],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_json_logs_and_an_unencodable_result_that_is_not_stored(
    app: App, database_url: str, conn: psycopg.Connection[Any],
) -> None:
    @app.task(name="results.opaque")
    def opaque() -> None: ...

    @app.task(name="results.echo")
    def echo(n: int) -> int:
        return n

    unstorable, echoed = opaque.delay().id, echo.delay(7).id
    worker = run_burst_worker(database_url, app.schema, "--log-format", "json")
    assert worker.returncode == 0, worker.stderr
    lines = [line for line in worker.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # a line that is not JSON fails the test here
    assert records and all(isinstance(r, dict) and {"time", "level", "logger", "event"} <= set(r) for r in records)
    for record in records:
        assert record["time"].endswith("Z") and datetime.fromisoformat(record["time"].removesuffix("Z"))
    events = [r["event"] for r in records]
    assert events[:2] == ["worker.connections", "worker.started"] and events[-1] == "worker.stopped", events

    [not_stored] = [r for r in records if r["event"] == "job.result_not_stored"]
    assert (not_stored["job_id"], not_stored["task"], not_stored["level"]) == (unstorable, "results.opaque", "warning")
    assert not_stored["reason"] == "Encoding objects of type Opaque is unsupported"
    completed = {r["job_id"]: r for r in records if r["event"] == "job.completed"}
    assert sorted(completed) == sorted([unstorable, echoed])
    assert completed[echoed]["task"] == "results.echo" and completed[echoed]["logger"].startswith("pgtasks")

    rows = {row["id"]: row for row in jobs(conn, app.schema)}
    assert (rows[unstorable]["state"], rows[unstorable]["result"]) == ("completed", None)  # completes all the same
    assert (rows[echoed]["state"], rows[echoed]["result"]) == ("completed", 7)


def test_text_logs_are_one_event_per_line_with_its_fields(app: App, database_url: str) -> None:
    @app.task(name="results.echo")
    def echo(n: int) -> int:
        return n

    job = echo.delay(3).id
    worker = run_burst_worker(database_url, app.schema)
    assert worker.returncode == 0, worker.stderr
    [completed] = [line for line in worker.stderr.splitlines() if " job.completed " in line]
    assert f"job_id={job} " in completed and "task=results.echo" in completed and " INFO " in completed
