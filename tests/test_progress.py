"""Progress from inside a task: current_job().set_progress(), stored throttled, read by JobRef and the CLI."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

import pgtasks
from pgtasks import App, current_job
from pgtasks.cli import main
from pgtasks.core.context import JobProgress, encode_progress
from pgtasks.testing import drain, eager, worker_thread
from pgtasks.worker.progress import PROGRESS_INTERVAL, ProgressWriter
from tests.helpers import run_with_pool, wait_for

REPORTS = 5000
BOUND_S = 30.0  # generous: a loaded 2-core machine


def cli(app: App, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--database-url", app.dsn, "--schema", app.schema, *args])
    assert result.exit_code == 0, result.output
    return result


# -- through a real worker, on every pool mode --------------------------------------------------


def test_a_sync_task_reports_thousands_of_times_for_a_few_writes_and_the_last_value_is_kept(
        target_app: App) -> None:
    """A loop of 5,000 reports neither waits on the database nor costs more than 1/interval writes a
    second; the value is readable while the job runs, and the final one stays after completion."""
    app = target_app
    gate = threading.Event()
    took: list[float] = []

    @app.task(name="resize")
    def resize(total: int) -> str:
        job = current_job()
        started = time.perf_counter()
        for done in range(total):
            job.set_progress(done, total, message="resizing", meta={"file": f"img{done}.png"})
        took.append(time.perf_counter() - started)
        gate.wait(BOUND_S)
        job.set_progress(total, total, message="done")  # just before returning: must still land
        return "ok"

    ref = resize.delay(REPORTS)
    with worker_thread(app, concurrency=1, poll_interval=0.1) as worker:
        wait_for(lambda: (p := ref.progress()) is not None and p.done == REPORTS - 1, timeout=BOUND_S)
        during = ref.progress()
        writer = worker.progress_writer
        assert writer is not None
        writes_during_loop = writer.writes
        gate.set()
        assert ref.wait(timeout=BOUND_S) == "ok"
    assert during is not None
    assert (during.total, during.message, during.meta, during.attempt) == (REPORTS, "resizing",
                                                                          {"file": f"img{REPORTS - 1}.png"}, 1)
    assert during.at is not None and during.fraction == pytest.approx((REPORTS - 1) / REPORTS)
    # The loop is dict stores, not round trips: 5,000 of them in well under a second even when loaded.
    assert took[0] < 2.0, took
    # At most one write per interval while the loop ran, plus the one that woke the writer.
    assert writes_during_loop <= took[0] / PROGRESS_INTERVAL + 2, (writes_during_loop, took)
    final = ref.progress()
    assert final == JobProgress(REPORTS, REPORTS, "done", None, 1, final.at if final else None)
    assert ref.state() == "completed"


def test_an_async_task_reports_and_aprogress_reads_it(target_app: App) -> None:
    app = target_app
    seen = threading.Event()

    @app.task(name="crawl")
    async def crawl() -> None:
        current_job().set_progress(3, message="pages")
        await asyncio.to_thread(seen.wait, BOUND_S)  # running until the test has read it

    ref = crawl.delay()
    with worker_thread(app, concurrency=1, poll_interval=0.1):
        wait_for(lambda: asyncio.run(ref.aprogress()) is not None, timeout=BOUND_S, interval=0.05)
        progress = asyncio.run(ref.aprogress())
        seen.set()
        ref.wait(timeout=BOUND_S)
    assert progress is not None
    assert (progress.done, progress.total, progress.message, progress.fraction) == (3, None, "pages", None)
    assert progress.describe() == "3 pages"


def test_a_job_without_reports_has_no_progress(app: App) -> None:
    @app.task(name="quiet")
    def quiet() -> None: ...

    ref = quiet.delay()
    drain(app)
    assert ref.state() == "completed" and ref.progress() is None


def test_drain_stores_the_last_report_of_a_job_that_ended_between_two_writes(app: App) -> None:
    """A burst worker stops right after its last job: the pending report is written at stop."""

    @app.task(name="count")
    def count(n: int) -> None:
        for i in range(n + 1):
            current_job().set_progress(i, n)

    refs = [count.delay(n) for n in (10, 20, 30)]
    drain(app)
    assert [(p.done, p.total) for ref in refs if (p := ref.progress()) is not None] == [(10, 10), (20, 20), (30, 30)]


# -- the writer and the store op ----------------------------------------------------------------


def test_reports_from_many_threads_cost_one_statement_per_interval(app: App) -> None:
    """Four threads report for four jobs as fast as they can for about a second: the writer sends
    one statement per interval for all of them, and stores each job's latest value."""

    @app.task(name="w")
    def w() -> None: ...

    ids = [w.delay().id for _ in range(4)]
    drain(app)  # completed, claims = 1

    async def body(pool: Any) -> tuple[int, float]:
        writer = ProgressWriter(pool, app.store, interval=0.2)
        writer.start()
        started = time.monotonic()

        def report(job_id: int) -> None:
            n = 0
            while time.monotonic() - started < 1.0:
                writer.report(job_id, 1, encode_progress(n, None, None, None, 1))
                n += 1
            writer.report(job_id, 1, encode_progress(n, None, "last", None, 1))

        await asyncio.gather(*(asyncio.to_thread(report, job_id) for job_id in ids))
        elapsed = time.monotonic() - started
        await writer.stop()
        return writer.writes, elapsed

    writes, elapsed = run_with_pool(app, body)
    assert 1 <= writes <= elapsed / 0.2 + 2, (writes, elapsed)
    refs = [pgtasks.JobRef(job_id, "w", app) for job_id in ids]
    assert all((p := ref.progress()) is not None and p.message == "last" for ref in refs)


def test_a_report_after_the_worker_stopped_is_dropped_without_failing_the_task(app: App) -> None:
    """A sync task abandoned after its timeout can outlive the worker: set_progress() must not
    raise for the closed event loop."""

    async def body(pool: Any) -> ProgressWriter:
        writer = ProgressWriter(pool, app.store)
        writer.start()
        await writer.stop()
        return writer

    writer = run_with_pool(app, body)  # its loop is closed now
    writer.report(1, 1, encode_progress(1, None, None, None, 1))
    assert writer.writes == 0


def test_a_report_from_an_older_claim_is_not_stored(app: App, conn: psycopg.Connection[Any]) -> None:
    """Fenced on claims: an attempt that lost its job (rescued, claimed again) cannot overwrite the
    progress of the attempt that runs now."""

    @app.task(name="f")
    def f() -> None: ...

    ref = f.delay()
    drain(app)
    conn.execute(f'UPDATE "{app.schema}".jobs SET claims = 2 WHERE id = %s', (ref.id,))

    async def body(pool: Any) -> list[int]:
        async with pool.connection() as c:
            return [await app.store.ajob_set_progress_many(c, [(ref.id, claims, encode_progress(
                claims, None, None, None, claims))]) for claims in (1, 2)]

    assert run_with_pool(app, body) == [0, 1]
    progress = ref.progress()
    assert progress is not None and progress.done == 2


# -- values, eager mode, the CLI -----------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "names"), [
    ({"done": "3"}, TypeError, "done='3'"),
    ({"done": True}, TypeError, "done=True"),
    ({"done": math.nan}, ValueError, "done=nan"),
    ({"done": -1}, ValueError, "done=-1"),
    ({"done": 1, "total": math.inf}, ValueError, "total=inf"),
    ({"done": 1, "message": 5}, TypeError, "message=5"),
    ({"done": 1, "meta": {"when": object()}}, TypeError, "cannot be stored as JSON"),
    ({"done": 1, "meta": "x" * 70_000}, ValueError, "more than 65536"),
])
def test_a_value_that_cannot_be_stored_is_refused_in_the_task(kwargs: dict[str, Any], error: type[Exception],
                                                               names: str) -> None:
    with pytest.raises(error, match=names.replace("(", r"\(")):
        encode_progress(kwargs.get("done"), kwargs.get("total"), kwargs.get("message"), kwargs.get("meta"), 1)  # type: ignore[arg-type]


def test_eager_mode_keeps_the_report_on_the_context_and_the_ref(app: App) -> None:
    seen: list[JobProgress | None] = []

    @app.task(name="e")
    def e() -> None:
        current_job().set_progress(1, 2, "half")
        seen.append(current_job().progress)

    @app.task(name="ae")
    async def ae() -> None:
        current_job().set_progress(5, message="async")

    async def run_async() -> JobProgress | None:
        return await (await ae.adelay()).aprogress()

    with eager(app):
        ref = e.delay()
        from_async = asyncio.run(run_async())
    assert seen == [JobProgress(1, 2, "half", None, 1)] and ref.progress() == seen[0]
    assert from_async == JobProgress(5, None, "async", None, 1)


def test_jobs_list_and_show_print_the_progress(app: App) -> None:
    @app.task(name="p")
    def p() -> None:
        current_job().set_progress(30, 120, message="resizing", meta={"file": "a.png"})

    ref = p.delay()
    drain(app)
    rows = json.loads(cli(app, "jobs", "list", "--json").stdout)
    assert rows[0]["progress"]["done"] == 30 and rows[0]["progress"]["meta"] == {"file": "a.png"}
    listed = cli(app, "jobs", "list").stdout
    header, row = listed.splitlines()[:2]
    assert "PROGRESS" in header and "30/120 (25%) resizing" in row
    shown = cli(app, "jobs", "show", str(ref.id)).stdout
    assert "progress:     30/120 (25%) resizing (attempt 1, at 20" in shown
    assert 'meta                {"file":"a.png"}' in shown
    assert json.loads(cli(app, "jobs", "show", str(ref.id), "--json").stdout)["progress"]["total"] == 120
