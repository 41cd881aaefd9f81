"""`pgtasks doctor` on a healthy database and broken ones: unmigrated, no leader, LISTEN via a transaction pooler."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from pgtasks import App
from pgtasks.cli import main
from pgtasks.testing import worker_thread
from tests.helpers import wait_for
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

    with worker_thread(app, poll_interval=0.1, leader_ttl=2.0, heartbeat_interval=0.2, rescue_after=5.0):
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
                  "long_transactions", "replication_slots", "pool_mode", "listen"):
        assert found[check]["status"] == "ok", found[check]
    assert found["leader"]["data"]["term"] >= 1
    assert found["pool_mode"]["data"]["mode"] == "direct" and found["listen"]["data"]["listen_ok"] is True
    # The CI server runs with autovacuum off; doctor says so, as a warning.
    assert found["vacuum"]["status"] in ("ok", "warn")
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
