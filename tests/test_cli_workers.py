"""`pgtasks workers` (live workers, their running jobs, the leader) and `--watch` on stats, queues list and workers.

The commands run as real subprocesses against real workers, directly and through PgBouncer's
session and transaction pools.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgtasks import App
from pgtasks.cli import main
from pgtasks.testing import worker_thread
from tests.helpers import run_with_pool, wait_for

ROOT = Path(__file__).resolve().parent.parent
WATCH_HEADER = "Ctrl-C to stop"


def cli(app: App, *args: str) -> list[str]:
    return [sys.executable, "-m", "pgtasks", "--database-url", app.dsn, "--schema", app.schema, *args]


def run_cli(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(app, *args), cwd=ROOT, capture_output=True, text=True, timeout=60)


def job_state(conn: psycopg.Connection[Any], schema: str, job_id: int) -> str | None:
    row = conn.execute(f'SELECT state::text FROM "{schema}".jobs WHERE id = %s', (job_id,)).fetchone()
    return None if row is None else str(row[0])


@contextlib.contextmanager
def held_jobs(app: App) -> Iterator[tuple[Callable[[], int], threading.Event]]:
    """A task that runs until the event is set: yields (enqueue one such job, the event).

    Set the event before the workers stop, or each stop waits out its grace for the job.
    """
    release = threading.Event()

    @app.task(name="hold")
    def hold() -> None:
        release.wait(60)

    try:
        yield (lambda: hold.delay().id), release
    finally:
        release.set()


def test_workers_lists_live_workers_their_running_jobs_and_the_leader(
        target_app: App, conn: psycopg.Connection[Any]) -> None:
    with held_jobs(target_app) as (enqueue, release), \
            worker_thread(target_app, queues=["default"], concurrency=3, poll_interval=0.1) as first:
        wait_for(lambda: first.maintenance is not None and first.maintenance.is_leader, timeout=15)
        with worker_thread(target_app, queues=["default", "mail"], concurrency=2, poll_interval=0.1) as second:
            job_id = enqueue()
            wait_for(lambda: job_state(conn, target_app.schema, job_id) == "running", timeout=15)
            listed = run_cli(target_app, "workers", "--json")
            human = run_cli(target_app, "workers")
            release.set()

    assert listed.returncode == 0, listed.stderr
    rows = {row["worker_id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {first.worker_id, second.worker_id}
    for worker, queues, concurrency in ((first, ["default"], 3), (second, ["default", "mail"], 2)):
        row = rows[worker.worker_id]
        assert (row["hostname"], row["pid"], row["queues"], row["concurrency"]) == (
            socket.gethostname(), os.getpid(), queues, concurrency)
        assert row["uptime_s"] >= 0 and row["seen_ago_s"] < 30
        assert row["started_at"] and row["last_seen_at"]
    assert [w for w, row in rows.items() if row["leader"]] == [first.worker_id]
    running = {w: [(job["id"], job["task"], job["queue"], job["attempt"]) for job in row["running"]]
               for w, row in rows.items()}
    holder = conn.execute(f'SELECT attempted_by FROM "{target_app.schema}".jobs WHERE id = %s', (job_id,)).fetchone()
    assert holder is not None
    assert running[holder[0]] == [(job_id, "hold", "default", 1)]
    assert [jobs for w, jobs in running.items() if w != holder[0]] == [[]]

    assert human.returncode == 0, human.stderr
    workers_part, running_part = human.stdout.split("\n\n")
    header, *lines = workers_part.splitlines()
    assert header.split() == ["WORKER", "HOST", "PID", "QUEUES", "BUSY", "UPTIME", "HEARTBEAT", "LEADER"]
    by_worker = {line.split()[0]: line.split() for line in lines}
    assert by_worker[first.worker_id][-1] == "leader" and by_worker[second.worker_id][-1] == "ago"
    assert by_worker[second.worker_id][3] == "default,mail"
    assert by_worker[holder[0]][4] in ("1/3", "1/2")
    title, running_header, job_line = running_part.splitlines()
    assert title == "running: 1"
    assert running_header.split() == ["WORKER", "JOB", "TASK", "QUEUE", "ATTEMPT", "FOR"]
    assert job_line.split()[:5] == [holder[0], str(job_id), "hold", "default", "1"]

def heartbeat_at(app: App, worker_id: str, seen: datetime) -> None:
    """A worker row last seen at `seen`, as a crashed worker leaves it."""

    async def write(pool: Any) -> None:
        async with pool.connection() as aconn:
            await app.store.aworker_heartbeat(aconn, worker_id=worker_id, hostname="gone-host", pid=4242,
                                              queues=["default"], concurrency=4, running=[], now=seen)

    run_with_pool(app, write)


def test_workers_hides_silent_rows_unless_all_and_exits_1_when_none_is_live(app: App) -> None:
    heartbeat_at(app, "crashed:1", datetime.now(UTC) - timedelta(minutes=5))

    def workers(*args: str) -> Result:  # in-process: nothing here depends on a process of its own
        return CliRunner().invoke(main, ["--database-url", app.dsn, "--schema", app.schema, "workers", *args])

    none = workers()
    assert none.exit_code == 1
    assert none.stdout.strip() == (f"schema {app.schema}: no worker has sent a heartbeat in the last 60.0s "
                                   "(start one with `pgtasks --app MODULE:APP worker`)")
    assert json.loads(workers("--json").stdout) == []

    everything = workers("--all")
    assert everything.exit_code == 0, everything.output
    line = next(line for line in everything.stdout.splitlines() if line.startswith("crashed:1"))
    assert "gone-host" in line and "(silent)" in line
    assert "(silent)" not in workers("--all", "--silent-after", "10m").stdout


# -- --watch ----------------------------------------------------------------------------------------

WATCHED = [pytest.param(["stats"], id="stats"), pytest.param(["queues", "list"], id="queues-list"),
           pytest.param(["workers"], id="workers")]


def read_until(fd: int, done: Callable[[bytes], bool], timeout: float = 30.0) -> bytes:
    """Read `fd` until `done(everything read)` holds; fail after `timeout` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data):
        left = deadline - time.monotonic()
        assert left > 0, f"not seen within {timeout}s; got {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"the command ended early; got {data!r}"
            data += chunk
    return data


def interrupt(process: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    """Ctrl-C: SIGINT, then the exit code and stderr."""
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    return process.returncode, stderr


@pytest.mark.parametrize("command", WATCHED)
def test_watch_repeats_until_ctrl_c_and_then_exits_0(app: App, command: list[str]) -> None:
    process = subprocess.Popen(cli(app, *command, "--watch", "0.2"), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        frames = read_until(process.stdout.fileno(), lambda data: data.count(WATCH_HEADER.encode()) >= 2)
    finally:
        code, stderr = interrupt(process)
    assert (code, stderr) == (0, b"")
    # Piped, frames follow each other whole (no cursor codes), each the command's usual output.
    assert "\x1b" not in frames.decode()
    first = frames.decode().split(WATCH_HEADER)[1]
    assert run_cli(app, *command).stdout.splitlines()[0] in first.splitlines()


@pytest.mark.parametrize("command", WATCHED)
def test_watch_json_prints_one_document_per_line(app: App, command: list[str]) -> None:
    process = subprocess.Popen(cli(app, *command, "--json", "--watch", "0.2"), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        lines = read_until(process.stdout.fileno(), lambda data: data.count(b"\n") >= 2).splitlines()
    finally:
        code, stderr = interrupt(process)
    assert (code, stderr) == (0, b"")
    # Nothing changes in between on an empty schema, so every frame is the one-shot document.
    assert [json.loads(line) for line in lines[:2]] == [json.loads(run_cli(app, *command, "--json").stdout)] * 2


def test_watch_redraws_in_place_on_a_terminal(app: App) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(cli(app, "queues", "list", "--watch", "0.2"), cwd=ROOT, stdout=terminal,
                               stderr=subprocess.PIPE)
    os.close(terminal)
    try:
        screen = read_until(controller, lambda data: data.count(WATCH_HEADER.encode()) >= 2).decode()
    finally:
        code, stderr = interrupt(process)
        os.close(controller)
    assert (code, stderr) == (0, b"")
    clear_screen, home, clear_below = "\x1b[2J", "\x1b[H", "\x1b[J"
    assert screen.startswith(clear_screen + home)
    # Each frame starts at the top-left corner and wipes what a longer previous frame left below it.
    assert screen.count(home) >= 2 and screen.count(clear_below) >= 1
    assert "QUEUE" in screen.split(home)[1]
