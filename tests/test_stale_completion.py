"""A stale completion from a worker that is really cut off (docs/design.md, "Fencing").

The stale worker's every connection goes through tests/tcp_proxy.py. While it runs a job (held
by an Event), the proxy partitions it: its open connections go silent and new ones hang, so its
heartbeat stops reaching PostgreSQL. The leader, connected directly, rescues the job after
`rescue_after` and claims it again. Then the job on the stale worker finishes, the network heals,
and its outcome reaches the database with the old `claims` while the new attempt runs: it must be
rejected, and the new attempt's outcome written. A second test freezes a real worker process
with SIGSTOP instead, and lets it report after the new attempt completed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgtasks import App, Worker
from pgtasks.client.task import Task
from tests.apps import stale_app as stale_app_module
from tests.conftest import ROOT
from tests.helpers import is_leader, jobs, logged, wait_for, worker_thread
from tests.tcp_proxy import FreezableProxy

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
        self.fresh_started = threading.Event()
        self.release_fresh = threading.Event()
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
def stale_app(proxied_app: App) -> App:
    """The worker that will be cut off: every connection of it goes through the proxy."""
    return proxied_app


def register(app: App, stale_app: App, attempts: Attempts) -> Task[[], str]:
    """The same task on both Apps, each attempt held until the test releases it; returns the leader's."""
    @stale_app.task(name=TASK)
    def stale() -> str:
        attempts.ran("stale")
        attempts.stale_started.set()
        attempts.release_stale.wait(RESCUE_BOUND_S + WAIT_S)
        return "stale"

    @app.task(name=TASK)
    def fresh() -> str:
        attempts.ran("fresh")
        attempts.fresh_started.set()
        attempts.release_fresh.wait(RESCUE_BOUND_S + WAIT_S)
        return "fresh"

    return fresh


def job_row(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    [row] = jobs(conn, schema)
    return row


def outcomes_settled(worker: Worker) -> int:
    """How many outcomes the worker's completer has written or had rejected."""
    assert worker.completer is not None
    return worker.completer.written + worker.completer.rejected


def db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def test_a_partitioned_workers_completion_while_its_rescued_job_runs_again_is_rejected(
    app: App, stale_app: App, proxied: tuple[FreezableProxy, str], conn: psycopg.Connection[Any],
    schema: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """design.md: "When it reports, its outcome carries the old `claims` value ... so it changes
    nothing and the worker logs `job.outcome_rejected`"; the rescue adds a `Rescued` error.

    The stale outcome arrives while the new attempt runs (the row is `running` again), so only the
    `claims` fence can turn it away; the SIGSTOP test below reports after the new one completed."""
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
            assert attempts.fresh_started.wait(RESCUE_BOUND_S), "the rescued job did not run again"
            assert attempts.runs() == ["stale", "fresh"]  # both attempts are running now
            proxy.heal()
            attempts.release_stale.set()
            wait_for(lambda: outcomes_settled(stale) == 1, timeout=WAIT_S)
            assert logged(caplog.records, "job.outcome_rejected") == [
                {"job_id": job_id, "claims": 1, "state": "completed"}]
            during = job_row(conn, schema)
            assert (during["state"], during["result"], during["claims"], during["attempted_by"]) == (
                "running", None, 2, leader.worker_id)
            attempts.release_fresh.set()
            wait_for(lambda: job_row(conn, schema)["state"] == "completed", timeout=WAIT_S)
    assert stale.completer is not None and (stale.completer.written, stale.completer.rejected) == (0, 1)
    assert_fenced(job_row(conn, schema), stale=stale.worker_id, fresh=leader.worker_id, cut_at=cut_at)


def assert_fenced(row: dict[str, Any], *, stale: str, fresh: str, cut_at: datetime) -> None:
    """The row keeps the second attempt's outcome, and its history shows the first was rescued."""
    assert (row["state"], row["result"], row["attempt"], row["claims"], row["attempted_by"]) == (
        "completed", "fresh", 2, 2, fresh)
    [rescued] = row["errors"]
    assert (rescued["type"], rescued["attempt"]) == ("Rescued", 1)
    assert f"worker {stale} went silent" in rescued["message"], rescued["message"]
    assert datetime.fromisoformat(rescued["at"]) >= cut_at  # rescued because of the cut, not before


# -- the same with a worker process frozen by SIGSTOP -------------------------------------------------


@contextlib.contextmanager
def stale_process(database_url: str, schema: str, log_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A `pgtasks worker` process on the `held` queue of tests/apps/stale_app.py, output in a file."""
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": schema, "PYTHONPATH": str(ROOT)}
    options = ["--queues", stale_app_module.QUEUE, "--concurrency", "1", "--poll-interval", "0.2", "--grace", "5",
               "--heartbeat-interval", str(HEARTBEAT_S), "--rescue-after", str(RESCUE_AFTER_S)]
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pgtasks", "--app", "tests.apps.stale_app:app", "worker",
                                 *options], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()  # SIGKILL ends a stopped process too
                proc.wait()


def lock_waiters(conn: psycopg.Connection[Any], key: int) -> int:
    row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                       "AND ((classid::bigint << 32) | objid::bigint) = %s", (key,)).fetchone()
    assert row is not None
    return int(row[0])


def rejections(log_path: Path) -> list[str]:
    """The job.outcome_rejected lines of a worker's text log, from the event name on."""
    return [line[line.index("job.outcome_rejected"):] for line in log_path.read_text().splitlines()
            if "job.outcome_rejected" in line]


def test_a_sigstopped_workers_completion_after_its_job_was_rescued_is_rejected(
    app: App, conn: psycopg.Connection[Any], schema: str, database_url: str, tmp_path: Path,
) -> None:
    """As above, with the stale worker a real process frozen by SIGSTOP while its job waits on an
    advisory lock the test holds; SIGCONT after the job was rescued and completed elsewhere, so
    the stale outcome meets a finished row."""
    @app.task(name="stale.held", queue=stale_app_module.QUEUE)
    def held(lock_key: int) -> str:
        return "fresh"

    key = uuid.uuid4().int % 2**62  # this test's own lock: no other test waits on it
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    log_path = tmp_path / "stale-worker.log"
    # The leader serves another queue, so only the stale process can claim the job first.
    with worker_thread(app, queues=["default"], **maintenance_options()) as leader:
        wait_for(lambda: is_leader(leader), timeout=WAIT_S)
        with stale_process(database_url, schema, log_path) as proc:
            job_id = held.delay(key).id
            wait_for(lambda: lock_waiters(conn, key) == 1, timeout=WAIT_S)  # the job runs, held
            stale_id = job_row(conn, schema)["attempted_by"]
            cut_at = db_now(conn)
            proc.send_signal(signal.SIGSTOP)
            with worker_thread(app, queues=[stale_app_module.QUEUE], elect=False, **maintenance_options()) as fresh:
                wait_for(lambda: job_row(conn, schema)["state"] == "completed", timeout=RESCUE_BOUND_S)
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                proc.send_signal(signal.SIGCONT)
                wait_for(lambda: rejections(log_path) != [], timeout=WAIT_S)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(WAIT_S) == 0, log_path.read_text()
    assert rejections(log_path) == [f"job.outcome_rejected job_id={job_id} claims=1 state=completed"]
    assert_fenced(job_row(conn, schema), stale=stale_id, fresh=fresh.worker_id, cut_at=cut_at)
