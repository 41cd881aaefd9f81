"""Workflows under fire (`-m slow`): a 1,000-member chord drained by `pgtasks worker` processes that
are SIGKILLed and replaced while it runs, and a 10,000-member chord end to end.

The chaos test kills a worker five times, each time once another sixth of the members completed,
always one that is running members at that moment. Strikes 1, 3 and 5 kill the leader if there
is one (a killed leader's successor is elected about 2.7 s later, so strike 3 usually finds none):
then the rescuer itself has to move before the dead worker's members are rescued. Members are rescued
and run again (at least once, as any job), but what a chord promises must hold exactly: the
callback ran once, with every member's result in member order, and every member completed.

The callback records each of its runs in a table of the test (tests/apps/workflow_chaos_app.py),
in a transaction of its own, so a second run would show there even if its outcome were fenced.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from pgtasks import App, chord
from tests.apps.workflow_chaos_app import COLLECT, MEMBER, register
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.tcp_proxy import FreezableProxy

pytestmark = pytest.mark.slow

APP = "tests.apps.workflow_chaos_app:app"
MEMBERS = 1000
WORKERS = 3
STRIKES = 5
# Rescue must be quick for the run to stay short: heartbeats every 0.25 s, a worker silent for
# 2 s is dead, and the rescuer looks every 0.5 s (rescue_after / 4). A leader's lease lasts 2 s,
# so a killed leader is replaced within about 2.7 s. A live worker on a loaded machine that
# misses 8 heartbeats in a row gets its members rescued too: they run twice, which a chord must
# survive as well.
WORKER_OPTIONS = ["--concurrency", "2", "--poll-interval", "0.2", "--leader-ttl", "2", "--heartbeat-interval",
                  "0.25", "--rescue-after", "2", "--grace", "2"]
RECOVERY_S = 60.0


class WorkerProcesses:
    """`pgtasks worker` subprocesses of the test's schema, each logging to a file of its own."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen[str]] = []
        self.killed: list[int] = []
        self._files: list[IO[str]] = []

    def start(self, *options: str) -> subprocess.Popen[str]:
        log = (self.logs / f"worker-{len(self.procs)}.log").open("w")
        self._files.append(log)
        proc = subprocess.Popen([sys.executable, "-m", "pgtasks", "--app", APP, "worker", *options],
                                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def live(self) -> dict[int, subprocess.Popen[str]]:
        return {proc.pid: proc for proc in self.procs if proc.poll() is None}

    def kill(self, pid: int) -> None:
        proc = self.live()[pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.killed.append(pid)

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.logs.glob("worker-*.log")))

    def stop_all(self) -> dict[int, int]:
        """SIGTERM every live worker; their exit codes by pid."""
        live = self.live()
        for proc in live.values():
            proc.send_signal(signal.SIGTERM)
        codes = {}
        for pid, proc in live.items():
            try:
                codes[pid] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[pid] = proc.wait()
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
            schema: str) -> Iterator[WorkerProcesses]:
    # `app` migrated the schema; the callback records each of its runs here.
    conn.execute(f'CREATE TABLE "{schema}".callback_runs (job_id bigint, attempt int, worker_id text, '
                 'result_values jsonb, at timestamptz DEFAULT clock_timestamp())')
    group = WorkerProcesses(env, tmp_path)
    try:
        yield group
    finally:
        group.close()


def scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def completed_members(conn: psycopg.Connection[Any], schema: str, workflow_id: int) -> int:
    return int(scalar(conn, f"SELECT count(*) FROM \"{schema}\".jobs WHERE workflow_id = %s AND task = %s "
                            "AND state = 'completed'", workflow_id, MEMBER))


def running_by_pid(conn: psycopg.Connection[Any], schema: str) -> dict[int, int]:
    """Members running now, by the pid of the worker running them."""
    rows = conn.execute(f"SELECT w.pid, count(*) FROM \"{schema}\".jobs AS j JOIN \"{schema}\".workers AS w "
                        "ON w.worker_id = j.attempted_by WHERE j.state = 'running' GROUP BY w.pid").fetchall()
    return {int(pid): int(n) for pid, n in rows}


def leader_pid(conn: psycopg.Connection[Any], schema: str) -> int | None:
    found = scalar(conn, f'SELECT w.pid FROM "{schema}".leader AS l JOIN "{schema}".workers AS w '
                         "ON w.worker_id = l.leader_id WHERE l.expires_at > now()")
    return None if found is None else int(found)


def pick_victim(conn: psycopg.Connection[Any], schema: str, workers: WorkerProcesses, *,
                leader: bool) -> int | None:
    """A live worker of ours running members now: the leader if `leader` and it is, else another."""
    live = workers.live()
    running = {pid: n for pid, n in running_by_pid(conn, schema).items() if pid in live}
    chief = leader_pid(conn, schema)
    if leader and chief in running:
        return chief
    others = [pid for pid in running if pid != chief]
    return max(others, key=running.__getitem__) if others else None


def wait_completed(conn: psycopg.Connection[Any], schema: str, workflow_id: int, count: int) -> None:
    wait_for(lambda: completed_members(conn, schema, workflow_id) >= count, timeout=RECOVERY_S)


def kill_one_running(conn: psycopg.Connection[Any], schema: str, workers: WorkerProcesses, *, leader: bool) -> bool:
    """SIGKILL a worker of ours while it runs members (see pick_victim); returns whether it led."""
    victim: list[int] = []

    def found() -> bool:
        pid = pick_victim(conn, schema, workers, leader=leader)
        if pid is not None:
            victim.append(pid)
        return pid is not None

    wait_for(found, timeout=RECOVERY_S, interval=0.005)
    was_leader = victim[0] == leader_pid(conn, schema)
    workers.kill(victim[0])
    return was_leader


def test_a_chord_survives_workers_sigkilled_during_it_and_runs_its_callback_once_in_order(
    app: App, workers: WorkerProcesses, conn: psycopg.Connection[Any], schema: str,
) -> None:
    started = time.monotonic()
    member, collect = register(app)
    # 5-20 ms of work each: long enough that kills find members running, short enough for speed.
    ref = chord([member.s(i, sleep_ms=5 + i % 16) for i in range(MEMBERS)], collect.s()).delay()
    for _ in range(WORKERS):
        workers.start(*WORKER_OPTIONS)
    strikes: list[tuple[int, bool]] = []  # (completed members when it struck, the leader was killed)
    for strike in range(1, STRIKES + 1):
        wait_completed(conn, schema, ref.id, strike * MEMBERS // (STRIKES + 1))
        was_leader = kill_one_running(conn, schema, workers, leader=strike % 2 == 1)
        strikes.append((completed_members(conn, schema, ref.id), was_leader))
        workers.start(*WORKER_OPTIONS)

    assert ref.wait(timeout=RECOVERY_S * 2) == MEMBERS, workers.output()
    elapsed = time.monotonic() - started

    runs = conn.execute(f'SELECT job_id, result_values FROM "{schema}".callback_runs').fetchall()
    [callback_id] = [r[0] for r in conn.execute(
        f'SELECT id FROM "{schema}".jobs WHERE workflow_id = %s AND task = %s', (ref.id, COLLECT)).fetchall()]
    assert len(runs) == 1, f"the callback ran {len(runs)} times"
    assert runs[0][0] == callback_id and runs[0][1] == list(range(MEMBERS))
    states = dict(conn.execute(f"SELECT state::text, count(*) FROM \"{schema}\".jobs WHERE workflow_id = %s "
                               "GROUP BY 1", (ref.id,)).fetchall())
    assert states == {"completed": MEMBERS + 1}  # every member, and the one callback
    assert [s.result for s in ref.results()] == [*range(MEMBERS), MEMBERS]
    rescued = scalar(conn, f"SELECT count(*) FROM \"{schema}\".jobs WHERE workflow_id = %s "
                           "AND errors @> '[{\"type\": \"Rescued\"}]'", ref.id)
    assert len(workers.killed) == STRIKES and any(was_leader for _, was_leader in strikes), strikes
    assert rescued >= 1, "no member was rescued: the kills hit nothing running"
    codes = workers.stop_all()
    assert set(codes.values()) == {0}, workers.output()
    print(f"\n1,000-member chord with {STRIKES} SIGKILLs (at {[n for n, _ in strikes]} completed members, "
          f"leader killed: {[was for _, was in strikes]}): {rescued} members rescued, done in {elapsed:.1f} s")


BIG = 10_000


def test_a_10000_member_chord_is_one_copy_and_its_callback_gets_every_result_in_order(
    app: App, proxied: tuple[FreezableProxy, str], workers: WorkerProcesses, conn: psycopg.Connection[Any],
    schema: str,
) -> None:
    proxy, proxied_dsn = proxied
    producer = App(proxied_dsn, schema=schema)
    member, collect = register(producer)
    header = [member.s(i) for i in range(BIG)]
    with producer.database.pool().connection() as warm:  # opening the pool is not part of the count
        warm.execute("SELECT 1")
    statements: list[tuple[str, str]] = []

    def observe(sql: str, tag: str) -> bool:
        # Called by the proxy for every statement's CommandComplete; never takes the reply.
        statements.append((" ".join(sql.split()[:3]), tag))
        return False

    proxy.drop_reply(observe)
    started = time.perf_counter()
    ref = chord(header, collect.s()).delay()
    enqueued = time.perf_counter() - started
    seen = list(statements)
    producer.close()
    tags = [tag for _sql, tag in seen]
    # The workflows row and the ids (one SELECT), then every step in one COPY, in one transaction.
    assert tags == ["BEGIN", "SELECT 1", f"COPY {BIG + 1}", "COMMIT"], seen

    for _ in range(2):
        workers.start("--concurrency", "10", "--poll-interval", "0.2")
    assert ref.wait(timeout=RECOVERY_S * 2) == BIG, workers.output()
    total = time.perf_counter() - started
    runs = conn.execute(f'SELECT result_values FROM "{schema}".callback_runs').fetchall()
    assert len(runs) == 1 and runs[0][0] == list(range(BIG))
    states = dict(conn.execute(f"SELECT state::text, count(*) FROM \"{schema}\".jobs WHERE workflow_id = %s "
                               "GROUP BY 1", (ref.id,)).fetchall())
    assert states == {"completed": BIG + 1}
    assert set(workers.stop_all().values()) == {0}, workers.output()
    print(f"\n10,000-member chord: enqueued in {enqueued:.2f} s ({', '.join(tags)}), "
          f"callback done {total:.1f} s after the enqueue began (2 workers, concurrency 10, started after it)")
