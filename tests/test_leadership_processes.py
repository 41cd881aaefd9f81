"""Leadership, periodic runs and rescue across real `pgtasks worker` processes: two workers share one
schedule, the leader is SIGKILLed, a worker is SIGKILLed in the middle of a long job."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from pgtasks import App
from tests.conftest import ROOT
from tests.helpers import wait_for

# Renewed every 2 s and trusted for 4.8 s: a loaded 2-core machine does not miss a renewal by
# accident, so leadership changes only where a test causes it. The bounds below derive from it.
LEADER_TTL = 6.0
# Heartbeats every 0.5 s, rescue after 8 missed ones: only a dead worker's jobs are rescued.
RESCUE_AFTER = 4.0
WORKER_OPTIONS = ["--poll-interval", "0.2", "--leader-ttl", str(LEADER_TTL), "--heartbeat-interval", "0.5",
                  "--rescue-after", str(RESCUE_AFTER), "--concurrency", "4", "--grace", "5"]
SECOND = timedelta(seconds=1)
# Scheduling slack on a loaded machine, added to every bound the design states.
SLACK = 3.0
# docs/design.md: "After a crash, a follower takes over within TTL + TTL/3."
CRASH_TAKEOVER = LEADER_TTL + LEADER_TTL / 3


class Workers:
    """Starts worker subprocesses with their output in files (a full pipe would block them)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen[str]] = []
        self._files: list[IO[str]] = []

    def start(self, app_path: str, *args: str) -> subprocess.Popen[str]:
        """`pgtasks --app APP_PATH worker` with WORKER_OPTIONS, then `args` (a later option wins)."""
        log = (self.logs / f"worker-{len(self.procs)}.log").open("w")
        self._files.append(log)
        proc = subprocess.Popen([sys.executable, "-m", "pgtasks", "--app", app_path, "worker", *WORKER_OPTIONS, *args],
                                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.logs.glob("worker-*.log")))

    def stop_all(self) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=20))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self._files:
            log.close()


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path, app: App, conn: psycopg.Connection[Any],
            schema: str) -> Iterator[Workers]:
    # `app` migrated the schema; the test apps record every finished run here.
    conn.execute(f'CREATE TABLE "{schema}".test_runs (job_id bigint, attempt int, worker_id text, label text)')
    group = Workers(env, tmp_path)
    try:
        yield group
    finally:
        group.close()


def one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def lease(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any] | None:
    row = conn.execute(f'SELECT leader_id, term, elected_at, expires_at, expires_at > now() FROM "{schema}".leader'
                       ).fetchone()
    if row is None:
        return None
    return dict(zip(("leader_id", "term", "elected_at", "expires_at", "active"), row, strict=True))


def enqueued_ticks(conn: psycopg.Connection[Any], schema: str) -> list[tuple[datetime, int, int]]:
    """(fire_time, job_id, leader_term) of every enqueued tick of the every-second schedule."""
    rows = conn.execute(f"SELECT fire_time, job_id, leader_term FROM \"{schema}\".periodic_fires "
                        "WHERE schedule = 'every-second' AND outcome = 'enqueued' ORDER BY fire_time").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def all_completed(conn: psycopg.Connection[Any], schema: str, job_ids: list[int]) -> bool:
    done = one(conn, f"SELECT count(*) FROM \"{schema}\".jobs WHERE id = ANY(%s) AND state = 'completed'", job_ids)
    return bool(done == len(job_ids))


def runs_by_job(conn: psycopg.Connection[Any], schema: str, job_ids: list[int]) -> dict[int, int]:
    rows = conn.execute(f'SELECT job_id, count(*) FROM "{schema}".test_runs WHERE job_id = ANY(%s) GROUP BY 1',
                        (job_ids,)).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def test_two_workers_enqueue_each_tick_of_ten_seconds_once_and_run_it_once(
    workers: Workers, conn: psycopg.Connection[Any], schema: str, env: dict[str, str],
) -> None:
    for _ in range(2):
        workers.start("tests.apps.periodic_app:app")
    wait_for(lambda: len(enqueued_ticks(conn, schema)) > 0, timeout=30)
    first = enqueued_ticks(conn, schema)[0][0]
    end = first + 10 * SECOND
    wait_for(lambda: enqueued_ticks(conn, schema)[-1][0] >= end, timeout=30)
    window = [t for t in enqueued_ticks(conn, schema) if t[0] < end]
    assert [t[0] for t in window] == [first + i * SECOND for i in range(10)], workers.output()
    job_ids = [t[1] for t in window]
    assert len(set(job_ids)) == 10
    wait_for(lambda: all_completed(conn, schema, job_ids), timeout=20)
    assert runs_by_job(conn, schema, job_ids) == dict.fromkeys(job_ids, 1)  # run count == tick count
    tick_jobs = one(conn, f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'periodic.tick'")
    assert tick_jobs == len(enqueued_ticks(conn, schema))  # no job without its fire record
    worker_ids = {r[0] for r in conn.execute(f'SELECT worker_id FROM "{schema}".workers').fetchall()}
    current = lease(conn, schema)
    assert len(worker_ids) == 2 and current is not None and current["leader_id"] in worker_ids
    assert len({t[2] for t in window}) == 1  # one leader term enqueued them all

    listing = subprocess.run([sys.executable, "-m", "pgtasks", "--app", "tests.apps.periodic_app:app", "periodic"],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "every-second" in listing.stdout and "weekday-mornings" in listing.stdout
    assert "cron '0 9 * * 1-5' Europe/Paris" in listing.stdout and "catch-up:  skip" in listing.stdout
    assert "overlap:   allowed" in listing.stdout
    assert "last fire: never" in listing.stdout  # weekday-mornings has not fired
    assert f"last fire: {first.year}" in listing.stdout  # every-second has

    assert workers.stop_all() == [0, 0], workers.output()
    assert one(conn, f'SELECT count(*) FROM "{schema}".workers') == 0  # graceful stops remove their rows
    final = lease(conn, schema)
    assert final is not None and final["active"] is False  # and the leader resigned


def test_sigkill_of_the_leader_hands_over_within_the_ttl_without_duplicate_or_gap(
    workers: Workers, conn: psycopg.Connection[Any], schema: str,
) -> None:
    procs = [workers.start("tests.apps.periodic_app:app") for _ in range(2)]
    wait_for(lambda: len(enqueued_ticks(conn, schema)) >= 2
             and one(conn, f'SELECT count(*) FROM "{schema}".workers') == 2, timeout=30)
    before = lease(conn, schema)
    assert before is not None and before["active"]
    leader_pid = one(conn, f'SELECT pid FROM "{schema}".workers WHERE worker_id = %s', before["leader_id"])
    [leader] = [p for p in procs if p.pid == leader_pid]
    [survivor] = [p for p in procs if p is not leader]
    survivor_id = one(conn, f'SELECT worker_id FROM "{schema}".workers WHERE pid = %s', survivor.pid)

    leader.send_signal(signal.SIGKILL)
    leader.wait(10)
    killed_at = one(conn, "SELECT now()")
    old = lease(conn, schema)  # the dead leader's last renewal
    assert old is not None and old["term"] == before["term"]

    def taken_over() -> bool:
        now = lease(conn, schema)
        return now is not None and now["term"] > before["term"] and now["active"]

    wait_for(taken_over, timeout=CRASH_TAKEOVER + 2 * SLACK)
    after = lease(conn, schema)
    assert after is not None and after["leader_id"] == survivor_id and after["term"] == before["term"] + 1
    # The lease the dead leader held ran out at most one TTL after the kill, and the survivor was
    # elected at most one election interval (TTL / 3) after that, plus scheduling slack.
    assert old["expires_at"] - killed_at <= timedelta(seconds=LEADER_TTL)
    assert after["elected_at"] - old["expires_at"] <= timedelta(seconds=LEADER_TTL / 3 + SLACK), workers.output()
    assert after["elected_at"] - killed_at <= timedelta(seconds=CRASH_TAKEOVER + SLACK), workers.output()
    # So the failover (<= 11 s) fits in the on-time grace (max(15 s, 1.5 x TTL)): no tick may be missed.

    wait_for(lambda: enqueued_ticks(conn, schema)[-1][0] >= after["elected_at"] + 3 * SECOND, timeout=20)
    ticks = enqueued_ticks(conn, schema)
    first = ticks[0][0]
    # No duplicate (the primary key) and no gap: the failover took less than the on-time grace,
    # so the new leader enqueued every tick the dead one had not.
    assert [t[0] for t in ticks] == [first + i * SECOND for i in range(len(ticks))], workers.output()
    assert {t[2] for t in ticks} == {before["term"], after["term"]}
    job_ids = [t[1] for t in ticks]
    # Jobs the dead worker had claimed are rescued and completed by the survivor.
    wait_for(lambda: all_completed(conn, schema, job_ids), timeout=20)
    runs = runs_by_job(conn, schema, job_ids)
    assert set(runs) == set(job_ids)
    rescued = {r[0] for r in conn.execute(
        f"SELECT id FROM \"{schema}\".jobs WHERE id = ANY(%s) AND errors @> '[{{\"type\": \"Rescued\"}}]'",
        (job_ids,)).fetchall()}
    # At-least-once: a job runs twice only when the dead worker ran it and the survivor rescued it.
    twice = {job_id for job_id, count in runs.items() if count == 2}
    assert runs == {job_id: 2 if job_id in twice else 1 for job_id in job_ids}
    assert twice <= rescued
    assert workers.stop_all()[procs.index(survivor)] == 0


def test_sigkill_in_the_middle_of_a_long_job_is_rescued_and_completed_once_elsewhere(
    workers: Workers, conn: psycopg.Connection[Any], schema: str, app: App,
) -> None:
    @app.task(name="rescue.long")
    def long(seconds: float) -> None: ...

    doomed = workers.start("tests.apps.rescue_app:app")
    wait_for(lambda: one(conn, f'SELECT count(*) FROM "{schema}".workers') == 1, timeout=30)
    doomed_id = one(conn, f'SELECT worker_id FROM "{schema}".workers WHERE pid = %s', doomed.pid)
    job = long.delay(60.0)
    wait_for(lambda: one(conn, f'SELECT attempted_by FROM "{schema}".jobs WHERE id = %s AND state = %s',
                         job.id, "running") == doomed_id, timeout=15)
    rescuer = workers.start("tests.apps.rescue_app:app")
    wait_for(lambda: one(conn, f'SELECT count(*) FROM "{schema}".workers') == 2, timeout=30)
    rescuer_id = one(conn, f'SELECT worker_id FROM "{schema}".workers WHERE pid = %s', rescuer.pid)

    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    wait_for(lambda: job.state() == "completed", timeout=30)
    row = conn.execute(f'SELECT attempt, attempted_by, errors FROM "{schema}".jobs WHERE id = %s', (job.id,)).fetchone()
    assert row is not None
    attempt, attempted_by, errors = row
    assert (attempt, attempted_by) == (2, rescuer_id)
    [error] = errors
    assert error["type"] == "Rescued" and error["attempt"] == 1
    assert "rescued" in error["message"] and doomed_id in error["message"]
    runs = conn.execute(f'SELECT attempt, worker_id FROM "{schema}".test_runs WHERE job_id = %s', (job.id,)).fetchall()
    assert runs == [(2, rescuer_id)]  # exactly one completion, by the rescuing worker
    assert workers.stop_all()[1] == 0
