"""Writes job outcomes in batches: one UPDATE for everything that finished since the last write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgtasks.core.aio import cancel_and_wait, wait_event
from pgtasks.core.errors import DatabaseError
from pgtasks.core.logs import EventBurst, emit_event, held_writes, log_event
from pgtasks.core.models import ClaimedJob, JobState, Outcome
from pgtasks.core.retry import reconnect_delay
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.worker")

MAX_BATCH = 1000

_EVENTS = {
    JobState.COMPLETED: "job.completed",
    JobState.RETRYABLE: "job.retrying",
    JobState.DISCARDED: "job.discarded",
    JobState.CANCELLED: "job.cancelled",
    JobState.SCHEDULED: "job.snoozed",
}


@dataclass(frozen=True, slots=True)
class JobLine:
    """A job's one log line (`job.completed job_id=... task=...`), logged once its outcome is recorded.

    Built by the worker when the attempt ends, but logged by the completer after the write: an
    outcome the fence rejects (a stale claim) was never recorded, and says so with
    `job.outcome_rejected` alone instead of a `job.completed` that did not happen.
    """

    level: int
    event: str
    fields: dict[str, Any]
    traceback: str | None = None

    def emit(self, burst: EventBurst | None = None) -> None:
        if burst is None:
            emit_event(logger, self.level, self.event, self.fields, exc_text=self.traceback)
        else:
            burst.emit(logger, self.level, self.event, self.fields, exc_text=self.traceback)


def job_line(job: ClaimedJob, outcome: Outcome, duration_s: float) -> JobLine | None:
    """INFO for completions, cancels and snoozes, WARNING for retries, ERROR for discards; None when
    the logger would drop that level anyway (`--log-level WARNING`: no line to build per completion).

    A discard carries the last attempt's traceback; a retry only its one-line error, so a flaky
    task does not flood the log (every attempt's traceback is in `pgtasks jobs show`).
    """
    level = logging.INFO
    error = outcome.error
    if error is not None:
        if outcome.state is JobState.DISCARDED:
            level = logging.ERROR
        elif outcome.state is JobState.RETRYABLE:
            level = logging.WARNING
    if not logger.isEnabledFor(level):
        return None
    fields: dict[str, Any] = {"job_id": job.id, "task": job.task, "attempt": job.attempt,
                              "duration_ms": round(duration_s * 1000, 2)}
    if error is not None:
        fields["error"] = f"{error.type}: {error.message}"
    if outcome.retry_in is not None:
        fields["retry_in_s"] = round(outcome.retry_in, 3)
    traceback = error.traceback if error and outcome.state is JobState.DISCARDED else None
    return JobLine(level, _EVENTS.get(outcome.state, f"job.{outcome.state.value}"), fields, traceback)


class Completer:
    """Batches outcomes without a timer: while one write is in flight, the next batch accumulates.

    So an idle worker writes each outcome at once (no added latency) and a busy one writes
    hundreds per round trip. A failed write keeps its batch and retries with backoff: an outcome
    is never dropped while the process lives (after a crash, the rescuer takes over).
    """

    def __init__(self, pool: AsyncConnectionPool[Any], store: Store) -> None:
        self._pool = pool
        self._store = store
        self._pending: dict[tuple[int, int], tuple[Outcome, JobLine | None]] = {}
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.rejected = 0
        # Called after each batch is written: the worker's flow control claims again then, when a
        # limit held jobs back or its last batch was full (a place frees only once the outcome
        # leaves `running`).
        self.on_written: Callable[[], None] | None = None

    def submit(self, outcome: Outcome, line: JobLine | None = None) -> None:
        """Queue `outcome` for the next write; `line` is logged once the write records it."""
        # Keyed by (job, claim): the first outcome of a claim wins, a second one is a bug upstream.
        self._pending.setdefault((outcome.job_id, outcome.claims), (outcome, line))
        self._idle.clear()
        self._ready.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def pending_job_ids(self) -> list[int]:
        """Ids of jobs whose outcome is not written yet (their rows still say `running`)."""
        return [job_id for job_id, _claims in self._pending]

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="pgtasks-completer")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted outcome is written; False if `timeout` ran out first."""
        return await wait_event(self._idle, timeout)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        failures = 0
        # Outcomes whose write failed once may in fact have been committed (the connection can
        # die after COMMIT and before the reply): if the retry then finds them gone, that is
        # most likely our own earlier write, not a newer claim, so it is not worth a warning.
        uncertain: set[tuple[int, int]] = set()
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                # In job id order: a step's completion locks its successors' rows (the workflow
                # trigger), and batches that lock them in one order cannot deadlock each other. A
                # deadlock or serialization failure still can happen (other writers); like any
                # failed write it is retried below, with its whole batch.
                keys = sorted(list(self._pending)[:MAX_BATCH])
                entries = [self._pending[k] for k in keys]
                try:
                    async with self._pool.connection() as conn:
                        written = await self._store.ajob_set_outcome_many(conn, [o for o, _line in entries])
                except DatabaseError as exc:
                    failures += 1
                    uncertain.update(keys)
                    if failures == 1:
                        log_event(logger, logging.WARNING, "completer.failing", error=str(exc),
                                  backlog=len(self._pending))
                    await asyncio.sleep(reconnect_delay(failures))
                    continue
                if failures:
                    log_event(logger, logging.INFO, "completer.recovered", after_failures=failures)
                    failures = 0
                for key in keys:
                    del self._pending[key]
                self.written += len(written)
                if self.on_written is not None:
                    self.on_written()
                self._report(keys, entries, written, uncertain)
            self._idle.set()

    def _report(self, keys: list[tuple[int, int]], entries: list[tuple[Outcome, JobLine | None]], written: set[int],
                uncertain: set[tuple[int, int]]) -> None:
        """Each written outcome's log line; a warning for each the fence rejected.

        The lines of a batch are one burst (see core/logs.py): copies of one log record, and
        with pgtasks' own handler one write for all of them.
        """
        with held_writes():
            self._report_lines(keys, entries, written, uncertain, EventBurst())

    def _report_lines(self, keys: list[tuple[int, int]], entries: list[tuple[Outcome, JobLine | None]],
                      written: set[int], uncertain: set[tuple[int, int]], burst: EventBurst) -> None:
        for key, (outcome, line) in zip(keys, entries, strict=True):
            if outcome.job_id in written:
                uncertain.discard(key)
                if line is not None:
                    line.emit(burst)
            elif key in uncertain:
                uncertain.discard(key)
                if line is not None:  # most likely recorded by the try that failed mid-flight
                    line.emit(burst)
                log_event(logger, logging.INFO, "job.outcome_write_uncertain", job_id=outcome.job_id,
                          claims=outcome.claims, state=outcome.state.value,
                          reason="an earlier try failed mid-flight and may have written it")
            else:
                self.rejected += 1
                # The claim no longer owns the job (it was rescued and claimed again, or
                # changed by an operator): its outcome must not overwrite the newer one.
                log_event(logger, logging.WARNING, "job.outcome_rejected", job_id=outcome.job_id,
                          claims=outcome.claims, state=outcome.state.value)
