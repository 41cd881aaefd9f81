"""The ops CLI on a real database: jobs list/show/retry/cancel/purge, queues, stats; --json shapes, exit codes."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

import pgtasks
from pgtasks import App
from pgtasks.cli import main
from pgtasks.testing import drain
from tests.helpers import jobs


def run(app: App, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--database-url", app.dsn, "--schema", app.schema, *args], input=input)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def populated(app: App) -> dict[str, int]:
    """One completed, one discarded (with a traceback), one available job on queue mail, one scheduled."""

    @app.task(name="ok")
    def ok(n: int) -> int:
        return n

    @app.task(name="bad", max_attempts=1)
    def bad(n: int) -> None:
        raise ValueError(f"bad input {n}")

    @app.task(name="mailer", queue="mail")
    def mailer(to: str) -> None: ...

    done = ok.delay(1).id
    failed = bad.delay(2).id
    drain(app, queues=["default"])
    waiting = mailer.delay("a@example.com").id
    later = ok.apply_async(args=(3,), countdown=3600).id
    return {"done": done, "failed": failed, "waiting": waiting, "later": later}


def test_jobs_list_filters_and_json_shape(app: App, populated: dict[str, int]) -> None:
    rows = as_json(run(app, "jobs", "list", "--json"))
    assert [r["id"] for r in rows] == sorted(populated.values(), reverse=True)
    assert set(rows[0]) >= {"id", "task", "queue", "state", "attempt", "max_attempts", "run_at", "created_at",
                            "finalized_at", "last_error_type", "last_error_message"}
    discarded = as_json(run(app, "jobs", "list", "--state", "discarded", "--json"))
    assert [(r["id"], r["last_error_type"], r["last_error_message"]) for r in discarded] == [
        (populated["failed"], "ValueError", "bad input 2")]
    assert [r["id"] for r in as_json(run(app, "jobs", "list", "--queue", "mail", "--json"))] == [populated["waiting"]]
    assert len(as_json(run(app, "jobs", "list", "--task", "ok", "--limit", "1", "--json"))) == 1
    table = run(app, "jobs", "list")
    assert table.exit_code == 0 and "ValueError: bad input 2" in table.output and table.output.startswith("ID")
    bad_state = run(app, "jobs", "list", "--state", "nope")
    assert bad_state.exit_code == 2 and "not a job state" in bad_state.output


def test_jobs_show_has_args_errors_with_tracebacks_and_timings(app: App, populated: dict[str, int]) -> None:
    shown = as_json(run(app, "jobs", "show", str(populated["failed"]), "--json"))
    assert shown["args"] == {"n": 2} and shown["state"] == "discarded"
    [error] = shown["errors"]
    assert error["type"] == "ValueError" and "Traceback" in error["traceback"]
    assert shown["run_seconds"] is not None and shown["wait_seconds"] is not None
    text = run(app, "jobs", "show", str(populated["failed"]))
    assert "ValueError: bad input 2" in text.output and "Traceback" in text.output and "waited" in text.output
    assert as_json(run(app, "jobs", "show", str(populated["done"]), "--json"))["result"] == 1
    missing = run(app, "jobs", "show", "999999")
    assert missing.exit_code == 1 and "not found" in missing.stderr


def test_jobs_retry_by_id_and_in_bulk(app: App, populated: dict[str, int], conn: psycopg.Connection[Any]) -> None:
    out = as_json(run(app, "jobs", "retry", str(populated["failed"]), str(populated["waiting"]), "--json"))
    assert out == {"retried": [populated["failed"]], "skipped": [populated["waiting"]]}
    row = {r["id"]: r for r in jobs(conn, app.schema)}[populated["failed"]]
    assert row["state"] == "available" and row["finalized_at"] is None and row["max_attempts"] == 2
    nothing = run(app, "jobs", "retry", "--state", "discarded", "--json")
    assert nothing.exit_code == 1 and json.loads(nothing.stdout) == {"retried": [], "skipped": []}
    assert run(app, "jobs", "retry").exit_code == 2  # neither ids nor a filter
    bulk = as_json(run(app, "jobs", "retry", "--state", "completed", "--task", "ok", "--json"))
    assert bulk["retried"] == [populated["done"]]
    outcomes = drain(app, queues=["default"])
    assert sorted((o.id, o.state) for o in outcomes) == sorted(
        [(populated["failed"], "discarded"), (populated["done"], "completed")])


def test_jobs_cancel_waiting_job_is_cancelled_at_once(app: App, populated: dict[str, int]) -> None:
    out = as_json(run(app, "jobs", "cancel", str(populated["waiting"]), str(populated["done"]), "--json"))
    assert out == {"cancelled": [populated["waiting"]], "cancel_requested": [],
                   "not_cancellable": [populated["done"]]}
    with pytest.raises(pgtasks.JobCancelledError, match="cancelled by an operator"):
        pgtasks.JobRef(populated["waiting"], "mailer", app).wait(timeout=5)
    again = run(app, "jobs", "cancel", str(populated["waiting"]))
    assert again.exit_code == 1 and "already finished" in again.stderr


def test_jobs_purge_asks_then_deletes_by_filter(app: App, populated: dict[str, int],
                                                conn: psycopg.Connection[Any]) -> None:
    refused = run(app, "jobs", "purge")  # no terminal and no --yes: refuse
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    assert len(jobs(conn, app.schema)) == 4
    assert run(app, "jobs", "purge", "--older-than", "1h", "--yes", "--json").exit_code == 1  # all are newer
    out = as_json(run(app, "jobs", "purge", "--state", "discarded", "--yes", "--json"))
    assert out == {"deleted": 1}
    assert run(app, "jobs", "purge", "--state", "running", "--yes").exit_code == 2
    assert run(app, "jobs", "purge", "--older-than", "soon", "--yes").exit_code == 2
    out = as_json(run(app, "jobs", "purge", "--yes", "--json"))  # default: the finished states
    assert out == {"deleted": 1}
    assert sorted(r["id"] for r in jobs(conn, app.schema)) == sorted([populated["waiting"], populated["later"]])


def test_jobs_purge_in_batches_with_progress(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="many")
    def many(i: int) -> None: ...

    many.delay_many([(i,) for i in range(2500)])
    conn.execute(f'UPDATE "{app.schema}".jobs SET state = \'completed\', finalized_at = now()')
    result = run(app, "jobs", "purge", "--yes")
    assert result.exit_code == 0 and "deleted 2500 job(s)" in result.stdout
    assert jobs(conn, app.schema) == []


def test_queues_list_pause_resume_and_stats(app: App, populated: dict[str, int]) -> None:
    queues = {q["queue"]: q for q in as_json(run(app, "queues", "list", "--json"))}
    assert set(queues) == {"default", "mail"}
    assert queues["mail"]["available"] == 1 and queues["default"]["scheduled"] == 1
    assert set(queues["mail"]) == {"queue", "available", "scheduled", "running", "retryable", "waiting", "lag_seconds",
                                   "paused_at", "paused", "limits"}
    assert queues["mail"]["limits"] == []  # tests/test_limits_ops.py has queues with limits
    assert queues["mail"]["paused"] is False and queues["mail"]["lag_seconds"] >= 0
    paused = as_json(run(app, "queues", "pause", "mail", "--json"))
    assert paused["queue"] == "mail" and paused["paused"] is True and paused["paused_at"]
    assert as_json(run(app, "queues", "pause", "mail", "--json"))["paused_at"] == paused["paused_at"]  # idempotent
    assert {q["queue"]: q["paused"] for q in as_json(run(app, "queues", "list", "--json"))}["mail"] is True
    assert "since" in run(app, "queues", "list").output
    assert as_json(run(app, "queues", "resume", "mail", "--json")) == {"queue": "mail", "paused": False,
                                                                        "was_paused": True}
    assert as_json(run(app, "queues", "resume", "mail", "--json"))["was_paused"] is False
    stats = as_json(run(app, "stats", "--json"))
    assert stats["by_state"] == {"available": 1, "completed": 1, "discarded": 1, "scheduled": 1}
    assert stats["total"] == 4 and stats["window_seconds"] == 3600
    assert {t["task"]: (t["completed"], t["discarded"]) for t in stats["tasks"]} == {"ok": (1, 0), "bad": (0, 1)}
    text = run(app, "stats", "--window", "15m")
    assert text.exit_code == 0 and "jobs: 4 in total" in text.output


def test_commands_on_an_unmigrated_schema_exit_2(database_url: str) -> None:
    result = CliRunner().invoke(main, ["--database-url", database_url, "--schema", "pgt_never_made", "jobs", "list"])
    assert result.exit_code == 2 and "pgtasks migrate" in result.stderr
