"""`pgtasks doctor` on a healthy database and broken ones: unmigrated, no leader, LISTEN via a transaction pooler."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from click.testing import CliRunner, Result

from pgtasks import App
from pgtasks.cli import main
from pgtasks.leadership.heartbeat import Heartbeat
from pgtasks.testing import worker_thread
from tests.helpers import run_with_pool, wait_for
from tests.pgbouncer_fixtures import PgBouncerLab


def doctor(dsn: str, schema: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", dsn, "--schema", schema, "doctor", *args])


def findings(result: Result) -> dict[str, dict[str, Any]]:
    payload = json.loads(result.stdout)
    assert set(payload) == {"ok", "findings"}
    for finding in payload["findings"]:
        assert set(finding) == {"check", "status", "message", "advice", "data"}
        assert finding["status"] in {"ok", "warn", "fail", "skip"}
    return {f["check"]: f for f in payload["findings"]}


def test_doctor_on_a_healthy_database(app: App) -> None:
    @app.task(name="noop")
    def noop() -> None: ...

    # A 6 s lease, renewed every 2 s: a loaded machine does not let it lapse between checks.
    with worker_thread(app, poll_interval=0.1, leader_ttl=6.0, heartbeat_interval=0.2, rescue_after=5.0):
        def leader_elected() -> bool:
            with app.connect() as conn:
                lease = app.store.leader_get(conn)
            return lease is not None and lease.active
        wait_for(leader_elected, timeout=15)
        noop.delay().wait(timeout=10, poll_interval=0.05)
        result = doctor(app.dsn, app.schema, "--json")
        text = doctor(app.dsn, app.schema)
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["ok"] is True
    found = findings(result)
    for check in ("connection", "server_version", "connections", "migrations", "leader", "workers", "queue_lag",
                  "long_transactions", "replication_slots", "pool_mode", "listen", "unrunnable_tasks"):
        assert found[check]["status"] == "ok", found[check]
    assert found["leader"]["data"]["term"] >= 1
    assert found["pool_mode"]["data"]["mode"] == "direct" and found["listen"]["data"]["listen_ok"] is True
    # The CI server runs with autovacuum off, and doctor says so as a warning; with it on, the
    # jobs table of one job has nothing to report.
    with app.connect() as conn:
        autovacuum = conn.execute("SELECT current_setting('autovacuum') = 'on'").fetchone()
    assert (found["vacuum"]["status"], found["vacuum"]["data"]["autovacuum"]) == (
        ("ok", True) if autovacuum == (True,) else ("warn", False))
    assert text.exit_code == 0 and text.stdout.strip().endswith("healthy")


def test_doctor_on_an_unmigrated_schema_fails_and_says_to_migrate(database_url: str, schema: str) -> None:
    result = doctor(database_url, schema, "--json")
    assert result.exit_code == 1
    found = findings(result)
    assert found["migrations"]["status"] == "fail" and "pgtasks" in found["migrations"]["advice"]
    assert found["leader"]["status"] == "skip" and found["workers"]["status"] == "skip"
    text = doctor(database_url, schema)
    assert text.exit_code == 1 and "[FAIL] migrations" in text.stdout and "migrate" in text.stdout


def test_doctor_without_a_leader_or_workers_fails(app: App) -> None:
    result = doctor(app.dsn, app.schema, "--json")
    assert result.exit_code == 1
    found = findings(result)
    assert found["migrations"]["status"] == "ok"
    assert found["leader"]["status"] == "fail" and "start a worker" in found["leader"]["advice"]
    assert found["workers"]["status"] == "fail"


def test_doctor_reports_queue_lag_and_strict_fails_on_warnings(app: App) -> None:
    @app.task(name="stuck", queue="stuck")
    def stuck() -> None: ...

    stuck.delay()
    found = findings(doctor(app.dsn, app.schema, "--json", "--max-lag", "0"))
    assert found["queue_lag"]["status"] == "warn" and "'stuck'" in found["queue_lag"]["message"]
    assert doctor(app.dsn, app.schema, "--strict", "--max-lag", "0").exit_code == 1


def test_doctor_fails_when_listen_is_forced_through_a_transaction_pooler(pgbouncer: PgBouncerLab, app: App) -> None:
    tx_dsn = pgbouncer.instances["transaction"].dsn
    forced = doctor(tx_dsn, app.schema, "--json", "--listen")
    assert forced.exit_code == 1
    found = findings(forced)
    assert found["pool_mode"]["data"]["mode"] == "transaction"
    assert found["listen"]["status"] == "fail"
    assert "--listen-dsn" in found["listen"]["advice"] and "--no-listen" in found["listen"]["advice"]
    auto = findings(doctor(tx_dsn, app.schema, "--json"))
    assert auto["listen"]["status"] == "warn" and "poll only" in auto["listen"]["message"]


def test_doctor_warns_about_a_silent_worker_next_to_a_live_one(app: App) -> None:
    """A crashed worker leaves its row behind with an old heartbeat: a warning naming it (the live
    worker keeps the check from failing), an error only under --strict."""

    async def heartbeats(pool: Any) -> None:
        for worker_id, seen in (("live-worker", None), ("silent-worker", datetime.now(UTC) - timedelta(hours=1))):
            beat = Heartbeat(pool, app.store, worker_id=worker_id, queues=["default"], concurrency=1,
                             held_jobs=list, interval=1.0)
            await beat.run_once(now=seen)

    run_with_pool(app, heartbeats)
    result = doctor(app.dsn, app.schema, "--json", "--stale-after", "30")
    workers = findings(result)["workers"]
    assert workers["status"] == "warn", workers
    assert workers["data"]["alive"] == ["live-worker"] and list(workers["data"]["stale"]) == ["silent-worker"]
    assert 3600 <= workers["data"]["stale"]["silent-worker"] < 3600 + 60
    assert "1 silent for over 30s: silent-worker" in workers["message"] and "rescuer" in workers["advice"]
    assert doctor(app.dsn, app.schema, "--strict", "--stale-after", "30").exit_code == 1


def test_doctor_reports_a_transaction_held_open_past_the_threshold(app: App, database_url: str) -> None:
    """A test connection sits idle in a transaction for over a second: `--long-transaction 1` lists
    it, with its pid, application name and state; once it commits it is no longer listed."""
    name = f"doctor-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, application_name=name) as holder:
        holder.execute("SELECT 1")  # opens the transaction (psycopg does not autocommit by default)
        pid = holder.info.backend_pid

        def open_for_over_a_second(conn: psycopg.Connection[Any]) -> bool:
            age = conn.execute("SELECT extract(epoch FROM now() - xact_start) FROM pg_stat_activity WHERE pid = %s",
                               (pid,)).fetchone()
            return age is not None and age[0] is not None and float(age[0]) > 1.0

        with psycopg.connect(database_url, autocommit=True) as watcher:
            wait_for(lambda: open_for_over_a_second(watcher), timeout=10)
        held = findings(doctor(app.dsn, app.schema, "--json", "--long-transaction", "1"))["long_transactions"]
        holder.commit()
    assert held["status"] == "warn", held
    [mine] = [t for t in held["data"]["transactions"] if t["pid"] == pid]
    assert (mine["application_name"], mine["state"]) == (name, "idle in transaction") and mine["age_seconds"] > 1.0
    assert f"pid {pid} ({name}," in held["message"] and "pg_terminate_backend" in held["advice"]
    after = findings(doctor(app.dsn, app.schema, "--json", "--long-transaction", "1"))["long_transactions"]
    assert pid not in [t["pid"] for t in after["data"].get("transactions", [])]


def test_doctor_reports_ready_jobs_whose_task_no_live_worker_of_their_queue_knows(app: App) -> None:
    """A worker claims only its own tasks' jobs: a job of a task no live worker registered (renamed,
    removed, or its app's workers down) waits; doctor names it and says how to find and end it."""
    other = App(app.dsn, schema=app.schema)

    @other.task(name="gone.task")
    def gone() -> None: ...

    @app.task(name="here.task")
    def here() -> None: ...

    gone.delay()
    with worker_thread(app, poll_interval=0.1, heartbeat_interval=0.2):
        here.delay().wait(timeout=10, poll_interval=0.05)
        result = doctor(app.dsn, app.schema, "--json")
    other.close()
    finding = findings(result)["unrunnable_tasks"]
    assert finding["status"] == "warn", finding
    assert "'gone.task' in 'default' (1 ready)" in finding["message"]
    assert "pgtasks jobs list --task gone.task" in finding["advice"]
    assert [(u["queue"], u["task"], u["ready"]) for u in finding["data"]["unrunnable"]] == [("default", "gone.task", 1)]
