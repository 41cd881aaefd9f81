"""A stale completion from a worker that is really cut off (docs/design.md, "Fencing").

The stale worker's every connection goes through tests/tcp_proxy.py. While it runs a job (held
by an Event), the proxy partitions it: its open connections go silent and new ones hang, so its
heartbeat stops reaching PostgreSQL. The leader, connected directly, rescues the job after
`rescue_after`, claims it again and completes it. Then the job on the stale worker finishes, the
network heals, and its outcome reaches the database with the old `claims`: it must be rejected.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from pgtasks import App
from pgtasks.task import Task
from tests.helpers import is_leader, jobs, logged, wait_for, worker_thread
from tests.tcp_proxy import FreezableProxy, database_proxy

TASK = "stale_completion.work"
HEARTBEAT_S = 0.5
RESCUE_AFTER_S = 3.0  # 3 x heartbeat is the least MaintenanceConfig allows; 6 x leaves slack
# The rescue happens rescue_after after the last heartbeat that got through, at the leader's
# next rescuer run (every rescue_after / 4); everything else is a round trip or a poll.
WAIT_S = 30.0
RESCUE_BOUND_S = RESCUE_AFTER_S + RESCUE_AFTER_S / 4 + WAIT_S


class Attempts:
    """What each worker's copy of the task did, recorded from the task threads."""

    def __init__(self) -> None:
        self.stale_started = threading.Event()
        self.release_stale = threading.Event()
        self._lock = threading.Lock()
        self._runs: list[str] = []

    def ran(self, who: str) -> None:
        with self._lock:
            self._runs.append(who)

    def runs(self) -> list[str]:
        with self._lock:
            return list(self._runs)


def maintenance_options() -> dict[str, Any]:
    return {"heartbeat_interval": HEARTBEAT_S, "rescue_after": RESCUE_AFTER_S, "concurrency": 1}


@pytest.fixture
def proxied(database_url: str) -> Iterator[tuple[FreezableProxy, str]]:
    with database_proxy(database_url) as pair:
        yield pair


@pytest.fixture
def stale_app(proxied: tuple[FreezableProxy, str], app: App) -> Iterator[App]:
    application = App(proxied[1], schema=app.schema)
    yield application
    application.close()


def register(app: App, stale_app: App, attempts: Attempts) -> Task[[], str]:
    """The same task on both Apps: held on the stale worker, immediate on the leader's (returned)."""
    @stale_app.task(name=TASK)
    def stale() -> str:
        attempts.ran("stale")
        attempts.stale_started.set()
        attempts.release_stale.wait(RESCUE_BOUND_S + WAIT_S)
        return "stale"

    @app.task(name=TASK)
    def fresh() -> str:
        attempts.ran("fresh")
        return "fresh"

    return fresh


def job_row(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    [row] = jobs(conn, schema)
    return row


def db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def test_a_partitioned_workers_completion_after_its_job_was_rescued_is_rejected(
    app: App, stale_app: App, proxied: tuple[FreezableProxy, str], conn: psycopg.Connection[Any],
    schema: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """design.md: "When it reports, its outcome carries the old `claims` value ... so it changes
    nothing and the worker logs `job.outcome_rejected`"; the rescue adds a `Rescued` error."""
    caplog.set_level(logging.INFO, logger="pgtasks")
    proxy = proxied[0]
    attempts = Attempts()
    job_id = register(app, stale_app, attempts).delay().id
    with worker_thread(stale_app, listen=False, poll_interval=0.2, elect=False,
                       **maintenance_options()) as stale:
        assert attempts.stale_started.wait(WAIT_S), "the stale worker never started the job"
        with worker_thread(app, **maintenance_options()) as leader:
            wait_for(lambda: is_leader(leader), timeout=WAIT_S)
            cut_at = db_now(conn)
            assert proxy.partition() >= 1
            wait_for(lambda: job_row(conn, schema)["state"] == "completed", timeout=RESCUE_BOUND_S)
            assert attempts.runs() == ["stale", "fresh"]  # the stale attempt is still running
            attempts.release_stale.set()
            proxy.heal()
            wait_for(lambda: logged(caplog.records, "job.outcome_rejected") != [], timeout=WAIT_S)
    assert stale.completer is not None and stale.completer.rejected == 1
    assert logged(caplog.records, "job.outcome_rejected") == [
        {"job_id": job_id, "claims": 1, "state": "completed"}]
    row = job_row(conn, schema)
    assert (row["state"], json.loads(json.dumps(row["result"])), row["attempt"], row["claims"],
            row["attempted_by"]) == ("completed", "fresh", 2, 2, leader.worker_id)
    [rescued] = row["errors"]
    assert (rescued["type"], rescued["attempt"]) == ("Rescued", 1)
    assert f"worker {stale.worker_id} went silent" in rescued["message"], rescued["message"]
    assert datetime.fromisoformat(rescued["at"]) >= cut_at  # rescued because of the partition
