"""`pgtasks worker --processes N` and recycling, with real processes on a real database: a child
SIGKILLed mid-job is replaced and its job rescued; SIGTERM drains every child; a second signal
forces them; --max-jobs-per-child and --max-memory-per-child recycle children without losing or
repeating a job; a crash loop, a child that cannot start and a supervisor that dies each end as
documented (docs/worker.md, "Processes")."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import click
import psycopg
import pytest

from pgtasks import App
from pgtasks.cli.worker import ProcessCount, available_cpus, given_options
from pgtasks.cli.worker import worker as worker_command
from pgtasks.worker.lifetime import MEMORY_CHECK_INTERVAL, rss_bytes
from pgtasks.worker.supervisor import EXIT_CRASH_LOOP, SupervisorConfig, describe_exit
from tests.conftest import ROOT
from tests.helpers import logged, wait_for
from tests.test_cli_workers import run_cli
from tests.test_leadership_processes import Workers, one, workers

__all__ = ["workers"]  # the fixture, imported for the tests below

PROC_APP = "tests.apps.processes_app:app"
RESCUE_APP = "tests.apps.rescue_app:app"
TWO = ("--processes", "2")
FIELD = re.compile(r"(\w+)=(\S+)")


@pytest.fixture
def tasks(app: App) -> App:
    """The test process's App with the task names of tests/apps/processes_app.py and rescue_app.py."""

    @app.task(name="proc.record")
    def record(seconds: float = 0.0) -> int:
        raise AssertionError("run by the worker processes only")

    @app.task(name="proc.asleep")
    async def asleep(seconds: float) -> float:
        raise AssertionError("run by the worker processes only")

    @app.task(name="proc.die")
    def die() -> None: ...

    @app.task(name="rescue.long")
    def long(seconds: float) -> None: ...

    return app


def events(output: str, event: str) -> list[dict[str, str]]:
    """The k=v fields of every `event` line of the workers' text logs (values without spaces)."""
    return [dict(FIELD.findall(line.split(f" {event} ", 1)[1])) for line in output.splitlines()
            if f" {event} " in line]


def live_children(conn: psycopg.Connection[Any], schema: str) -> list[tuple[str, int, str | None]]:
    """(worker_id, pid, supervisor) of the worker rows whose process is still running."""
    rows = conn.execute(f'SELECT worker_id, pid, supervisor FROM "{schema}".workers ORDER BY pid').fetchall()
    return [(r[0], r[1], r[2]) for r in rows if _alive(r[1])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def job_row(conn: psycopg.Connection[Any], schema: str, job_id: int) -> dict[str, Any]:
    row = conn.execute(f'SELECT state::text, attempt, attempted_by, result, errors FROM "{schema}".jobs '
                       "WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return dict(zip(("state", "attempt", "attempted_by", "result", "errors"), row, strict=True))


def exit_code(proc: subprocess.Popen[str], workers: Workers, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the supervisor did not exit within {timeout}s:\n{workers.output()}") from None


# -- crashes, signals ---------------------------------------------------------------------------------


def test_a_child_sigkilled_mid_job_is_restarted_and_its_job_rescued_and_run_once(
        workers: Workers, tasks: App, conn: psycopg.Connection[Any], schema: str) -> None:
    supervisor = workers.start(RESCUE_APP, *TWO, "--leader-ttl", "3")
    wait_for(lambda: len(live_children(conn, schema)) == 2, timeout=30, interval=0.1)
    job = tasks.tasks["rescue.long"].delay(60.0)
    wait_for(lambda: job_row(conn, schema, job.id)["state"] == "running", timeout=15, interval=0.05)
    doomed_id = job_row(conn, schema, job.id)["attempted_by"]
    doomed_pid = one(conn, f'SELECT pid FROM "{schema}".workers WHERE worker_id = %s', doomed_id)

    os.kill(doomed_pid, signal.SIGKILL)
    # The job is rescued (the dead child's heartbeat stopped) and run again by a live child.
    wait_for(lambda: job_row(conn, schema, job.id)["state"] == "completed", timeout=45, interval=0.1)
    row = job_row(conn, schema, job.id)
    assert row["attempt"] == 2 and row["attempted_by"] != doomed_id, workers.output()
    assert [e["type"] for e in row["errors"]] == ["Rescued"]
    runs = conn.execute(f'SELECT attempt, worker_id FROM "{schema}".test_runs WHERE job_id = %s', (job.id,)).fetchall()
    assert runs == [(2, row["attempted_by"])]  # one run to the end: attempt 1 died with its process

    # The supervisor replaced the killed child and said so, naming its pid and the signal.
    wait_for(lambda: len(live_children(conn, schema)) == 2, timeout=30, interval=0.1)
    children = live_children(conn, schema)
    assert doomed_pid not in [pid for _, pid, _ in children]
    assert {sup for _, _, sup in children} == {f"{socket.gethostname()}:{supervisor.pid}"}
    [crash] = events(workers.output(), "supervisor.child_crashed")
    assert (crash["pid"], crash["signal"], crash["restart_in_s"]) == (str(doomed_pid), "SIGKILL", "1.0")
    assert len(events(workers.output(), "supervisor.child_started")) == 3

    assert workers.stop_all() == [0], workers.output()


def test_sigterm_drains_every_child_and_the_supervisor_exits_0(
        workers: Workers, tasks: App, conn: psycopg.Connection[Any], schema: str) -> None:
    supervisor = workers.start(PROC_APP, *TWO, "--concurrency", "1", "--poll-interval", "0.1")
    wait_for(lambda: len(live_children(conn, schema)) == 2, timeout=30, interval=0.1)
    supervisor_id = f"{socket.gethostname()}:{supervisor.pid}"

    # `pgtasks workers` lists the children under their supervisor; --json has the field.
    listed = run_cli(tasks, "workers", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted((r["pid"], r["supervisor"]) for r in json.loads(listed.stdout)) == sorted(
        (pid, supervisor_id) for _, pid, _ in live_children(conn, schema))
    human = run_cli(tasks, "workers")
    assert human.returncode == 0, human.stderr
    header, group, *members = human.stdout.split("\n\n")[0].splitlines()
    assert header.split()[0] == "WORKER"
    assert group.split()[:4] == [supervisor_id, "(supervisor,", "2", "processes)"]
    assert sorted(m.split()[0] for m in members) == sorted(w for w, _, _ in live_children(conn, schema))
    assert all(m.startswith("  ") for m in members)

    record = tasks.tasks["proc.record"]
    ids = [record.delay(1.5).id for _ in range(2)]

    def both_running() -> bool:
        rows = [job_row(conn, schema, i) for i in ids]
        return all(r["state"] == "running" for r in rows) and len({r["attempted_by"] for r in rows}) == 2

    wait_for(both_running, timeout=15, interval=0.05)  # concurrency 1: one job in each child
    supervisor.send_signal(signal.SIGTERM)
    assert exit_code(supervisor, workers, 30) == 0, workers.output()

    pids: set[int] = set()
    for job_id in ids:
        row = job_row(conn, schema, job_id)
        assert (row["state"], row["attempt"], row["errors"]) == ("completed", 1, []), workers.output()
        pids.add(row["result"])  # the pid of the child that ran it
    assert len(pids) == 2
    output = workers.output()
    assert sorted(e["exit_code"] for e in events(output, "supervisor.child_exited")) == ["0", "0"]
    assert [e["running"] for e in events(output, "worker.stopping")] == ["1", "1"]  # each drained its job
    # The children run with this command line's options, and the budget is counted for all of them.
    assert [e["concurrency"] for e in events(output, "worker.started")] == ["1", "1"]
    [budget] = events(output, "supervisor.connections")
    assert (budget["processes"], budget["per_process_max"], budget["server_connections_max"]) == ("2", "5", "10")
    assert one(conn, f'SELECT count(*) FROM "{schema}".workers') == 0  # graceful stops remove their rows


def test_a_second_signal_forces_every_child_and_their_jobs_are_put_back(
        workers: Workers, tasks: App, conn: psycopg.Connection[Any], schema: str) -> None:
    supervisor = workers.start(PROC_APP, *TWO, "--concurrency", "1", "--grace", "120")
    wait_for(lambda: len(live_children(conn, schema)) == 2, timeout=30, interval=0.1)
    ids = [tasks.tasks["proc.asleep"].delay(120.0).id for _ in range(2)]
    wait_for(lambda: all(job_row(conn, schema, i)["state"] == "running" for i in ids), timeout=15, interval=0.05)
    supervisor.send_signal(signal.SIGINT)
    wait_for(lambda: len(events(workers.output(), "worker.stopping")) == 2, timeout=15, interval=0.05)
    assert supervisor.poll() is None  # the children wait out their grace for the jobs
    supervisor.send_signal(signal.SIGINT)
    assert exit_code(supervisor, workers, 30) == 0, workers.output()
    for job_id in ids:
        row = job_row(conn, schema, job_id)
        assert (row["state"], row["attempt"]) == ("available", 0)
        assert row["errors"][-1]["type"] == "WorkerShutdown"
    output = workers.output()
    assert len(events(output, "supervisor.forcing")) == 1
    assert len(events(output, "worker.forced_stop")) == 2


def test_children_that_keep_crashing_end_the_supervisor_with_exit_3(
        workers: Workers, tasks: App, conn: psycopg.Connection[Any], schema: str) -> None:
    tasks.tasks["proc.die"].delay_many([()] * 10)  # each kills the child that runs it, mid-job
    supervisor = workers.start(PROC_APP, *TWO, "--concurrency", "1")
    assert exit_code(supervisor, workers, 90) == EXIT_CRASH_LOOP, workers.output()
    output = workers.output()
    crashes = events(output, "supervisor.child_crashed")
    assert len(crashes) == 5 and {c["exit_code"] for c in crashes} == {"1"}, output
    # Each slot's restart waits twice as long as the one before: 1 s, then 2 s.
    delays = [(c["slot"], c.get("restart_in_s")) for c in crashes]
    for slot in {c["slot"] for c in crashes}:
        mine = [d for s, d in delays if s == slot and d is not None]
        assert mine == ["1.0", "2.0", "4.0"][:len(mine)], output
    [loop] = events(output, "supervisor.crash_loop")
    assert (loop["crashes"], loop["exit_code"]) == ("5", "3")
    assert events(output, "supervisor.stopped")[-1]["exit_code"] == "3"


def test_a_child_that_cannot_start_ends_the_supervisor_with_its_exit_2(env: dict[str, str]) -> None:
    # `env` names a schema that was never migrated: every child would fail the same way.
    done = subprocess.run([sys.executable, "-m", "pgtasks", "--app", PROC_APP, "worker", *TWO], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "run `pgtasks migrate`" in done.stderr
    assert "supervisor.child_failed_to_start" in done.stderr
    assert "supervisor.child_crashed" not in done.stderr  # not retried: it would fail again


def test_children_whose_supervisor_dies_stop_by_themselves(
        workers: Workers, conn: psycopg.Connection[Any], schema: str) -> None:
    supervisor = workers.start(PROC_APP, *TWO)
    wait_for(lambda: len(live_children(conn, schema)) == 2, timeout=30, interval=0.1)
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait(10)
    # A graceful stop deletes the worker's row (a crash would leave it for the cleaner).
    wait_for(lambda: one(conn, f'SELECT count(*) FROM "{schema}".workers') == 0, timeout=20, interval=0.1)
    output = workers.output()
    assert len(events(output, "worker.supervisor_lost")) == 2, output
    assert len(events(output, "worker.stopped")) == 2


# -- recycling -------------------------------------------------------------------------------------------


def runs_by_pid(conn: psycopg.Connection[Any], schema: str) -> tuple[Counter[str], Counter[int]]:
    """How many jobs each process ran (test_runs.label is its pid), and how often each job ran."""
    rows = conn.execute(f'SELECT job_id, label FROM "{schema}".test_runs').fetchall()
    return Counter(r[1] for r in rows), Counter(int(r[0]) for r in rows)


def test_max_jobs_per_child_recycles_children_and_every_job_runs_once(
        workers: Workers, tasks: App, conn: psycopg.Connection[Any], schema: str) -> None:
    ids = [ref.id for ref in tasks.tasks["proc.record"].delay_many([()] * 1000)]
    supervisor = workers.start(PROC_APP, *TWO, "--burst", "--max-jobs-per-child", "100")
    assert exit_code(supervisor, workers, 110) == 0, workers.output()  # burst: every child drained
    done = one(conn, f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'completed' AND id = ANY(%s)", ids)
    per_pid, per_job = runs_by_pid(conn, schema)
    assert done == 1000 and per_job == dict.fromkeys(ids, 1)  # nothing lost, nothing run twice
    assert max(per_pid.values()) <= 100, per_pid  # no child ran more than its budget
    output = workers.output()
    recycled = events(output, "supervisor.child_recycled")
    # A child recycles once it has claimed 100 jobs; the last ones drain what is left and exit 0.
    assert len(recycled) == sum(1 for n in per_pid.values() if n == 100), per_pid
    assert 8 <= len(recycled) <= 10, per_pid
    assert {e["reason"] for e in events(output, "worker.recycling")} == {"max_jobs"}
    assert len(events(output, "supervisor.child_drained")) == 2
    assert events(output, "supervisor.child_crashed") == []


def test_max_memory_per_child_recycles_a_child_after_the_job_that_passed_it(
        workers: Workers, tasks: App, conn: psycopg.Connection[Any], schema: str) -> None:
    tasks.tasks["proc.record"].delay_many([()] * 3)
    # 1 MB: every Python process is above it, so each child recycles after its first job.
    supervisor = workers.start(PROC_APP, *TWO, "--burst", "--concurrency", "1", "--max-memory-per-child", "1")
    assert exit_code(supervisor, workers, 60) == 0, workers.output()
    per_pid, per_job = runs_by_pid(conn, schema)
    assert sorted(per_job.values()) == [1, 1, 1] and sorted(per_pid.values()) == [1, 1, 1], workers.output()
    output = workers.output()
    recycling = events(output, "worker.recycling")
    assert [e["reason"] for e in recycling] == ["max_memory"] * 3
    assert all(float(e["rss_mb"]) > 1 for e in recycling)
    assert len(events(output, "supervisor.child_recycled")) == 3


def test_a_worker_of_one_process_recycles_by_job_count_and_exits_0(
        workers: Workers, tasks: App, conn: psycopg.Connection[Any], schema: str) -> None:
    tasks.tasks["proc.record"].delay_many([()] * 5)
    alone = workers.start(PROC_APP, "--max-jobs-per-child", "2")
    assert exit_code(alone, workers, 60) == 0, workers.output()  # for a process manager, a stop like any other
    output = workers.output()
    assert [e["reason"] for e in events(output, "worker.recycling")] == ["max_jobs"]
    assert "supervisor" not in output  # --processes 1: no supervisor process
    states = Counter(r[0] for r in conn.execute(f'SELECT state::text FROM "{schema}".jobs').fetchall())
    assert states == {"completed": 2, "available": 3}


def run_until_stopped(worker: Any) -> None:
    async def main() -> None:
        async with asyncio.timeout(60):  # a worker that does not stop by itself fails the test
            await worker.arun()

    asyncio.run(main())


def test_a_worker_claims_no_more_than_its_job_budget_and_puts_none_back(
        app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="noop")
    def noop() -> None: ...

    caplog.set_level(logging.INFO, logger="pgtasks")
    noop.delay_many([()] * 50)
    worker = app.worker(concurrency=4, poll_interval=0.05, max_jobs=7)
    run_until_stopped(worker)
    assert (worker.recycled, worker.claimed) == ("max_jobs", 7)
    states = Counter(r[0] for r in conn.execute(f'SELECT state::text FROM "{app.schema}".jobs').fetchall())
    assert states == {"completed": 7, "available": 43}
    assert logged(caplog.records, "worker.unstarted_returned") == []  # nothing was claimed ahead of the budget
    [line] = logged(caplog.records, "worker.recycling")
    assert (line["reason"], line["max_jobs"], line["claimed"]) == ("max_jobs", 7, 7)


def test_a_worker_stops_after_the_job_that_took_it_past_its_memory_ceiling(
        app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture) -> None:
    hoard: list[bytes] = []

    @app.task(name="grow")
    def grow(megabytes: int) -> None:
        hoard.append(os.urandom(megabytes * 1024 * 1024))  # random bytes: resident, not shared zero pages
        time.sleep(MEMORY_CHECK_INTERVAL * 1.5)  # so that the check after each job is not skipped

    # The ceiling is this process's memory now plus 64 MB: the first job stays under it, the second passes it.
    ceiling = int(rss_bytes() / 2**20) + 64
    caplog.set_level(logging.INFO, logger="pgtasks")
    grow.delay_many([(1,), (128,), (1,)])
    worker = app.worker(concurrency=1, poll_interval=0.05, max_memory_mb=ceiling, claim_ahead=False)
    run_until_stopped(worker)
    assert worker.recycled == "max_memory"
    states = [r[0] for r in conn.execute(f'SELECT state::text FROM "{app.schema}".jobs ORDER BY id').fetchall()]
    assert states == ["completed", "completed", "available"]
    [line] = logged(caplog.records, "worker.recycling")
    assert line["reason"] == "max_memory" and line["rss_mb"] > ceiling
    hoard.clear()


# -- the parts, without processes ----------------------------------------------------------------------------


def test_restart_delays_double_up_to_the_cap() -> None:
    config = SupervisorConfig(processes=2)
    assert [config.restart_delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_child_exit_is_named_by_its_code_or_its_signal() -> None:
    assert describe_exit(1) == {"exit_code": 1}
    assert describe_exit(-signal.SIGKILL) == {"signal": "SIGKILL"}
    assert describe_exit(-signal.SIGSEGV) == {"signal": "SIGSEGV"}


def test_processes_takes_a_count_or_auto() -> None:
    count = ProcessCount()
    assert count.convert("3", None, None) == 3
    assert count.convert("auto", None, None) == available_cpus() >= 1
    for bad in ("0", "-1", "many"):
        with pytest.raises(click.BadParameter):
            count.convert(bad, None, None)


def test_the_children_get_the_options_given_on_the_command_line_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTASKS_LISTEN_DSN", "postgresql://secret@elsewhere/db")
    ctx = worker_command.make_context("worker", ["-q", "a,b", "--no-listen", "--burst", "--grace", "5",
                                                 "--processes", "3", "--log-level", "debug"])
    assert given_options(ctx, skip={"processes"}) == ["--queues", "a,b", "--no-listen", "--grace", "5.0", "--burst",
                                                      "--log-level", "DEBUG"]
    assert ctx.params["listen_dsn"] == "postgresql://secret@elsewhere/db"  # from the environment: inherited, not copied
