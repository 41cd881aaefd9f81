"""Operator cancel of running jobs (async and sync) and queue pause/resume, observed by a running worker."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgtasks
from pgtasks import App
from pgtasks.cli import main
from pgtasks.core.channels import control_channel
from pgtasks.testing import worker_thread
from tests.helpers import jobs, wait_for


def cli(app: App, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--database-url", app.dsn, "--schema", app.schema, *args])
    return result


def state(conn: psycopg.Connection[Any], app: App, job_id: int) -> str:
    return str({r["id"]: r["state"] for r in jobs(conn, app.schema)}[job_id])


@pytest.mark.parametrize("listen", [True, False], ids=["control-notify", "poll-check"])
def test_cancel_a_running_async_task(app: App, conn: psycopg.Connection[Any], listen: bool) -> None:
    started = threading.Event()
    saw_cancel: list[bool] = []

    @app.task(name="forever")
    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            saw_cancel.append(pgtasks.current_job().cancelled)
            raise

    ref = forever.delay()
    with worker_thread(app, poll_interval=0.2, listen=listen) as worker:
        assert started.wait(10)
        result = cli(app, "jobs", "cancel", str(ref.id), "--json")
        assert result.exit_code == 0 and f'"cancel_requested":[{ref.id}]' in result.stdout
        began = time.monotonic()
        with pytest.raises(pgtasks.JobCancelledError) as info:
            ref.wait(timeout=10, poll_interval=0.1)
        assert time.monotonic() - began < 5
        assert worker.claimed == 1
    assert saw_cancel == [True]
    assert info.value.error_type == "Cancelled"
    row = jobs(conn, app.schema)[0]
    assert row["state"] == "cancelled" and row["cancel_requested_at"] is not None and row["finalized_at"] is not None


def test_cancel_a_running_sync_task_that_checks_current_job(app: App, conn: psycopg.Connection[Any]) -> None:
    started = threading.Event()
    progress: list[int] = []

    @app.task(name="chunks")
    def chunks() -> str:
        started.set()
        for step in range(600):
            if pgtasks.current_job().cancelled:
                return f"stopped at {step}"
            progress.append(step)
            time.sleep(0.05)
        return "finished"

    ref = chunks.delay()
    with worker_thread(app, poll_interval=0.2):
        assert started.wait(10)
        assert cli(app, "jobs", "cancel", str(ref.id)).exit_code == 0
        with pytest.raises(pgtasks.JobCancelledError):
            ref.wait(timeout=10, poll_interval=0.1)
    assert len(progress) < 600
    row = jobs(conn, app.schema)[0]
    assert row["state"] == "cancelled" and row["result"] is None


def test_a_cancel_request_turns_a_later_retry_into_cancelled(app: App, conn: psycopg.Connection[Any]) -> None:
    """A sync task that fails after the request (instead of checking the flag) still ends cancelled."""
    started = threading.Event()
    release = threading.Event()

    @app.task(name="fails", max_attempts=5)
    def fails() -> None:
        started.set()
        release.wait(10)
        raise RuntimeError("failed anyway")

    ref = fails.delay()
    with worker_thread(app, poll_interval=0.1) as worker:
        assert started.wait(10)
        with app.connect() as own:
            app.store.job_cancel_many(own, [ref.id], reason="stop", control=control_channel(app.schema))
        wait_for(lambda: bool(jobs(conn, app.schema)[0]["cancel_requested_at"]))
        wait_for(lambda: worker.cancels.requested(ref.id), timeout=30)  # the watcher told the job
        release.set()
        with pytest.raises(pgtasks.JobCancelledError):
            ref.wait(timeout=10, poll_interval=0.1)
    assert jobs(conn, app.schema)[0]["attempt"] == 1


def test_pause_is_honoured_by_a_running_worker_and_resume_wakes_it(app: App, conn: psycopg.Connection[Any]) -> None:
    ran: list[str] = []

    @app.task(name="mail", queue="mail")
    def mail(n: int) -> None:
        ran.append(f"mail-{n}")

    @app.task(name="other", queue="other")
    def other(n: int) -> None:
        ran.append(f"other-{n}")

    with worker_thread(app, queues=["mail", "other"], poll_interval=0.3) as worker:
        assert cli(app, "queues", "pause", "mail").exit_code == 0  # holds from the next fetch on (SQL)
        paused_ref = mail.delay(1)
        other_ref = other.delay(1)
        other_ref.wait(timeout=10, poll_interval=0.05)  # fetched after both were enqueued: mail skipped
        fetches = worker.fetches
        wait_for(lambda: worker.fetches >= fetches + 3, timeout=30)  # and three more fetches skip it too
        assert state(conn, app, paused_ref.id) == "available"
        assert ran == ["other-1"]
        assert cli(app, "queues", "resume", "mail").exit_code == 0
        paused_ref.wait(timeout=10, poll_interval=0.05)
        assert worker.claimed == 2
    assert ran == ["other-1", "mail-1"]
