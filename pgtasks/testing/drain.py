"""drain(app): run every pending job in-process against the real database and report the outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgtasks.core.errors import ConfigurationError, PgtasksError
from pgtasks.core.hooks import JobEvent

if TYPE_CHECKING:
    from pgtasks.app import App
    from pgtasks.worker import Worker


# drain(with_scheduled=True): rounds of "run what is due, make the rest due" before giving up.
DEFAULT_MAX_ROUNDS = 100


class DrainError(PgtasksError):
    """drain(with_scheduled=True) still found waiting jobs after max_rounds rounds.

    `drained` holds the attempts that did run.
    """

    def __init__(self, message: str, drained: list[DrainedJob]) -> None:
        super().__init__(message)
        self.drained = drained


@dataclass(frozen=True, slots=True)
class DrainedJob:
    """One attempt that drain() ran: its outcome state and, if the task raised, the error."""

    id: int
    task: str
    queue: str
    attempt: int
    state: str  # completed, retryable, discarded, cancelled or scheduled (snoozed)
    error: str | None  # "ExceptionType: message" when the task raised
    duration: float


def _queues(app: App, queues: Sequence[str] | None) -> list[str]:
    if queues:
        return list(queues)
    # The queues of every registered task too: a workflow's later step may be in a queue that has
    # no ready job yet when the drain starts (it becomes ready when the step before it completes).
    with app.connect() as conn:
        found = {row["queue"] for row in app.store.queue_stats(conn)
                 if row["available"] or row["scheduled"] or row["retryable"] or row.get("waiting")}
    found |= {task.config.queue for task in app.tasks.values()}
    return sorted(found) or ["default"]


def _make_due(app: App, queues: Sequence[str]) -> int:
    with app.connect() as conn:
        return app.store.job_make_due(conn, queues)


async def adrain(app: App, queues: Sequence[str] | None = None, *, with_scheduled: bool = False,
                 max_rounds: int = DEFAULT_MAX_ROUNDS, **options: Any) -> list[DrainedJob]:
    """Async twin of drain()."""
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ConfigurationError(f"max_rounds={max_rounds!r}: expected an integer >= 1")
    names = await asyncio.to_thread(_queues, app, queues)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("listen", False)
    options.setdefault("grace", 5.0)
    drained: list[DrainedJob] = []
    for _ in range(max_rounds):
        drained += await _drain_once(app, names, options)
        if not with_scheduled or await asyncio.to_thread(_make_due, app, names) == 0:
            return drained
    raise DrainError(
        f"drain(with_scheduled=True) ran {max_rounds} rounds and jobs are still waiting in "
        f"{', '.join(names)}: a task that snoozes or fails forever? Raise max_rounds=, or drain "
        f"without with_scheduled to run only what is due now", drained)


async def _drain_once(app: App, names: list[str], options: dict[str, Any]) -> list[DrainedJob]:
    """One burst worker: every job that is due now, and retries that become due while it runs."""
    worker = app.worker(queues=names, burst=True, **options)
    drained: list[DrainedJob] = []

    def record(event: JobEvent) -> None:
        if event.worker_id == worker.worker_id:
            error = None if event.error is None else f"{type(event.error).__name__}: {event.error}"
            drained.append(DrainedJob(event.id, event.task, event.queue, event.attempt, event.state or "unknown",
                                      error, event.duration or 0.0))

    app.hooks.after.append(record)
    try:
        await worker.arun()
    finally:
        app.hooks.after.remove(record)
    return drained


def drain(app: App, queues: Sequence[str] | None = None, *, with_scheduled: bool = False,
          max_rounds: int = DEFAULT_MAX_ROUNDS, **options: Any) -> list[DrainedJob]:
    """Run a burst worker until no job is ready to run now; return each attempt's outcome in order.

    `queues` defaults to every queue with pending jobs and every registered task's queue. Jobs
    scheduled for later, and retries waiting for their backoff, are not waited for (they are not "ready") unless
    `with_scheduled=True`: then they are made due and run too, round after round, until none is
    left (at most `max_rounds` rounds, then DrainError). Other keyword arguments go to the
    Worker (concurrency=1 gives a deterministic order). Call `await adrain(...)` from a running
    event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop running: the expected case
    else:
        raise ConfigurationError("drain() was called inside a running event loop; use `await adrain(app)`")
    # Not inside the except block: there, the RuntimeError would become the __context__ of every
    # exception raised in the run, and each failed async task's traceback would start with it.
    return asyncio.run(adrain(app, queues, with_scheduled=with_scheduled, max_rounds=max_rounds, **options))


@contextlib.contextmanager
def worker_thread(app: App, *, stop_timeout: float = 60.0, **options: Any) -> Iterator[Worker]:
    """Run app.worker(**options) on its own event loop in a thread; stop it gracefully on exit.

    If the worker has not stopped `stop_timeout` seconds after the block ends, RuntimeError says
    where each of its asyncio tasks is waiting.
    """
    worker = app.worker(**options)
    errors: list[BaseException] = []
    started = threading.Event()

    def target() -> None:
        async def main() -> None:
            task = asyncio.create_task(worker.arun())
            ready = asyncio.create_task(worker.started.wait())
            await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            started.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=target, name="pgtasks-test-worker", daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the worker did not start within 30s")
    if errors:
        raise errors[0]
    try:
        yield worker
    finally:
        worker.request_stop()
        thread.join(stop_timeout)
        if thread.is_alive():
            raise RuntimeError(
                f"the worker did not stop within {stop_timeout:g}s; its tasks:\n{_task_stacks(worker)}")
        if errors:
            raise errors[0]


def _task_stacks(worker: Worker) -> str:
    """Where each asyncio task on the worker's loop is waiting: what a hung stop needs explained."""
    loop = worker.loop
    if loop is None or loop.is_closed():
        return "(the worker's event loop is closed)"
    report: list[str] = []
    collected = threading.Event()

    def collect() -> None:
        for task in asyncio.all_tasks(loop):
            frames = task.get_stack()
            where = " <- ".join(f"{f.f_code.co_name} ({f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno})"
                                for f in reversed(frames))
            report.append(f"- {task.get_name()}: {where or 'not started'}")
        collected.set()

    try:
        loop.call_soon_threadsafe(collect)
    except RuntimeError:  # it closed since the check above
        return "(the worker's event loop is closed)"
    if not collected.wait(5):
        return "(the worker's event loop is blocked: it did not answer within 5s)"
    return "\n".join(sorted(report))
