"""Shutdown with a sync task still running: a real `pgtasks worker` process, a real signal.

docs/worker.md (Shutdown): jobs still running after `--grace` are put back (`available`, the
attempt given back, an errors entry `WorkerShutdown`); a sync task's thread cannot be interrupted,
it is abandoned (threads are daemons) and its job runs again elsewhere. A second signal skips the
rest of the grace period. tests/test_cli.py proves this for async tasks; here the task is sync and
blocks its thread on an Event that is never set, so the process can only exit by abandoning it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgtasks import App
from tests.apps.shutdown_app import STARTED
from tests.conftest import ROOT
from tests.helpers import drain, jobs

GRACE_S = 1.0
# Generous bounds for a loaded 2-core machine: start-up (imports, migrations check, pool) and exit.
START_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = GRACE_S + 30.0


class WorkerProcess:
    """`pgtasks worker` for tests/apps/shutdown_app.py, its output read line by line as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgtasks", "--app", "tests.apps.shutdown_app:app", "worker",
             "--poll-interval", "0.1", *args],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_line(self, needle: str, timeout: float) -> str:
        """The first output line containing `needle`; fails after `timeout` s or if the process ended."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if needle in line), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    output = "\n".join(self.lines)
                    raise AssertionError(f"no line with {needle!r} within {timeout}s; output:\n{output}")
                self._changed.wait(min(remaining, 0.5))

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit code; fails (and kills the process) if it has not exited within `timeout` s."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the worker did not exit within {timeout}s; output:\n{self.output}") from None
        self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        self._reader.join(10)  # the pipe is at EOF once the process is gone
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()


@pytest.fixture
def enqueuer(app: App) -> App:
    """The test process's App with the task name of tests/apps/shutdown_app.py, finishing at once."""

    @app.task(name="shutdown.stuck")
    def stuck(label: str) -> str:
        return label

    return app


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.mark.parametrize("stop", ["grace_expires", "second_signal"])
def test_a_sync_task_past_grace_is_abandoned_its_job_put_back_and_the_process_exits(
    enqueuer: App, env: dict[str, str], conn: psycopg.Connection[Any], workers: list[WorkerProcess], stop: str,
) -> None:
    grace = GRACE_S if stop == "grace_expires" else 600.0  # second_signal: only the signal can end the wait
    worker = WorkerProcess(env, "--grace", str(grace))
    workers.append(worker)
    ref = enqueuer.tasks["shutdown.stuck"].delay("first")
    started = worker.wait_line(STARTED, START_TIMEOUT_S)
    assert f"job_id={ref.id} " in started  # its thread is in the task now, blocked for good
    assert "thread=pgtasks-sync-" in started  # a sync task: it runs on the worker's thread pool

    stopping_at = time.monotonic()
    worker.signal(signal.SIGTERM)
    if stop == "second_signal":
        worker.wait_line("worker.stopping", START_TIMEOUT_S)  # the first signal is handled: grace has begun
        worker.signal(signal.SIGTERM)
    code = worker.wait_exit(EXIT_TIMEOUT_S)
    elapsed = time.monotonic() - stopping_at

    assert code == 0, worker.output  # a graceful stop, though one thread never returned
    if stop == "grace_expires":
        assert elapsed >= GRACE_S  # it waited out the grace period first
    else:  # it exited within EXIT_TIMEOUT_S of a 600 s grace: the second signal cut the wait short
        assert "worker.forced_stop" in worker.output
    put_back = worker.wait_line("worker.jobs_put_back", 0)
    assert f"job_ids={ref.id}" in put_back and "count=1" in put_back
    assert [line for line in worker.lines if STARTED in line] == [started]  # one run, on one thread
    assert "job.completed" not in worker.output  # the abandoned thread never finished its job
    [row] = jobs(conn, enqueuer.schema)
    assert (row["state"], row["attempt"]) == ("available", 0)  # put back, its attempt given back
    [error] = row["errors"]
    assert (error["type"], error["attempt"]) == ("WorkerShutdown", 1)
    assert "shut down before the job finished; put back to run again" in error["message"]

    drain(enqueuer)  # "its job runs again elsewhere": another worker (this process) completes it
    [row] = jobs(conn, enqueuer.schema)
    assert (row["state"], row["attempt"], row["result"]) == ("completed", 1, "first")
    assert [e["type"] for e in row["errors"]] == ["WorkerShutdown"]
