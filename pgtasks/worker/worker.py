"""The Worker: claims jobs in batches up to its free slots, runs them, and shuts down without losing any."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from pgtasks.core.aio import cancel_and_wait, wait_event
from pgtasks.core.channels import control_channel, jobs_channel
from pgtasks.core.errors import ConfigurationError, ConnectionLostError, DatabaseError
from pgtasks.core.hooks import WorkerEvent
from pgtasks.core.logs import log_event
from pgtasks.core.models import ClaimedJob, ErrorEntry, Outcome
from pgtasks.core.registry import Registry
from pgtasks.core.retry import reconnect_delay
from pgtasks.leadership.maintenance import Maintenance
from pgtasks.storage import migrations
from pgtasks.storage.connections import await_database, make_async_pool
from pgtasks.storage.database import Database
from pgtasks.storage.store import Store
from pgtasks.worker.cancel import CancelRegistry, CancelWatcher
from pgtasks.worker.completer import Completer, job_line
from pgtasks.worker.config import WorkerConfig, supervisor_pid
from pgtasks.worker.executor import Executor
from pgtasks.worker.lifetime import Lifetime
from pgtasks.worker.limits import LIMITS_CHANGED, FlowControl
from pgtasks.worker.listening import ListenPlan, describe_connection, plan_listening
from pgtasks.worker.metrics import WorkerGauges, WorkerMetrics
from pgtasks.worker.notifier import Notifier
from pgtasks.worker.prefetch import STALL_SECONDS, FetchAhead
from pgtasks.worker.progress import ProgressWriter
from pgtasks.worker.threads import ElasticThreadPool

logger = logging.getLogger("pgtasks.worker")

# At shutdown, a job still running this long after it was cancelled is cancelled again.
JOB_RECANCEL_AFTER = 5.0
# While the listener is down, poll at least this often so wakeups are not missed for long.
DEGRADED_POLL_INTERVAL = 0.25


def unserved_tasks(registry: Registry[Any], queues: Collection[str]) -> dict[str, list[str]]:
    """The registered tasks whose declared queue is not in `queues`, by queue, sorted."""
    unserved: dict[str, list[str]] = {}
    for name, task in sorted(registry.tasks.items()):
        if task.config.queue not in queues:
            unserved.setdefault(task.config.queue, []).append(name)
    return dict(sorted(unserved.items()))


class WorkerHost(Protocol):
    """What a Worker runs for: an App provides it."""

    @property
    def registry(self) -> Registry[Any]: ...

    @property
    def store(self) -> Store: ...

    @property
    def database(self) -> Database: ...


class Worker:
    """Runs jobs from `queues` with up to `concurrency` at once.

    It fetches when told to (a NOTIFY for one of its queues, a slot freed after a full batch,
    or the poll timer) and never fetches more jobs than it has free slots: jobs it cannot start
    stay claimable by other workers, which spreads work evenly and keeps latency low.
    """

    _signals = 0  # SIGTERM/SIGINT received; `self._signals += 1` makes each worker's count its own
    # Counters and flags that start the same in every worker (an assignment makes them its own).
    _claims_uncertain = False  # a fetch's reply may have been lost with its connection
    _fetch_failures = 0  # consecutive failed fetches
    claimed_ahead = 0  # jobs that waited in _ready for a slot

    def __init__(self, app: WorkerHost, config: WorkerConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigurationError(f"Worker(config=..., {', '.join(options)}=...): give a WorkerConfig or options, "
                                     "not both")
        self.config = config if config is not None else WorkerConfig.from_options(options)
        self.app = app
        self.registry = app.registry
        self.store = app.store
        cfg = self.config
        self.queues = list(cfg.queues)
        self.concurrency = cfg.concurrency
        self.poll_interval = cfg.poll_interval
        self.listen = cfg.listen
        self.listen_dsn = cfg.listen_dsn
        self.grace = cfg.grace
        self.burst = cfg.burst
        self.pool_size = cfg.pool_size
        self.worker_id = cfg.worker_id
        self.listen_plan: ListenPlan | None = None
        self._queue_set = frozenset(self.queues)
        self._running: dict[asyncio.Task[None], ClaimedJob] = {}
        # Claimed ahead of a free slot (only while jobs are short: see worker/prefetch.py); started
        # in claim order as slots free up, put back on shutdown.
        self._ready: deque[ClaimedJob] = deque()
        self.fetch_ahead = FetchAhead(self.concurrency, enabled=cfg.claim_ahead)
        self._slot_freed_at = 0.0  # monotonic time a job last finished, or _ready last filled up
        self._should_fetch = True
        self._last_fetch = 0.0  # monotonic time of the last fetch
        self._stopping = False
        self._forced = False
        self._wake: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.notifier: Notifier | None = None
        self.completer: Completer | None = None
        self.threads = ElasticThreadPool()
        self.cancels = CancelRegistry()  # the running jobs an operator's cancel can reach
        self.cancel_watcher: CancelWatcher | None = None
        self.progress_writer: ProgressWriter | None = None  # stores current_job().set_progress() reports
        self.metrics: WorkerMetrics | None = None
        self.pool: AsyncConnectionPool[Any] | None = None
        self.executor = Executor(self.registry, self.worker_id, self.threads, self.cancels)
        self.fetches = 0
        self.claimed = 0
        self.waits = 0  # times the fetch loop waited for a wakeup or its poll (it must never spin)
        self.started = asyncio.Event()
        self.maintenance_config = cfg.maintenance()
        self.flow = FlowControl(self.store, self.registry, self.queues, self.poll_interval)
        # The tasks this worker claims jobs of (set at start, when every task is registered).
        self._task_names: list[str] = []
        self.maintenance: Maintenance | None = None
        self._lifecycle: WorkerEvent | None = None  # set once the worker_ready hooks run
        self.lifetime = Lifetime(max_jobs=cfg.max_jobs, max_memory_mb=cfg.max_memory_mb,
                                 supervisor_pid=supervisor_pid(cfg.supervisor) if cfg.supervisor else None)

    # -- lifecycle -------------------------------------------------------------------------------

    def connection_budget(self) -> dict[str, int]:
        """Server connections this worker process can hold at once: the pool plus the listener.

        Before start, with listen=None (auto), the listener is counted: the worst case.
        """
        if self.listen_plan is not None:
            return self.listen_plan.budget()
        return self.config.connection_budget()

    @property
    def recycled(self) -> str | None:
        """Why the worker stopped by itself to be replaced ("max_jobs", "max_memory"), else None."""
        return self.lifetime.recycled

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the worker runs on, once started."""
        return self._loop

    @property
    def listening(self) -> bool:
        """True once started with a LISTEN connection; False when polling only."""
        return self.listen_plan is not None and self.listen_plan.listen

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (graceful; a second signal forces) or, in burst mode, until drained."""
        asyncio.run(self.arun(install_signal_handlers=True))

    def request_stop(self) -> None:
        """Stop fetching and let running jobs finish within the grace period. Thread-safe."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._request_stop)
        else:
            self._stopping = True

    def force_stop(self) -> None:
        """Stop now: running jobs are put back to run again. Thread-safe."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._force_stop)

    def _request_stop(self) -> None:
        if not self._stopping:
            log_event(logger, logging.INFO, "worker.stopping", running=len(self._running), grace_s=self.grace)
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    def _force_stop(self) -> None:
        log_event(logger, logging.WARNING, "worker.forced_stop", running=len(self._running))
        self._forced = True
        self._request_stop()
        if self._force is not None:
            self._force.set()

    def _recycle(self, reason: str, **fields: Any) -> None:
        """Stop so that a fresh process replaces this one: running jobs finish within the grace."""
        if self.lifetime.recycled is None and not self._stopping:
            self.lifetime.recycled = reason
            log_event(logger, logging.INFO, "worker.recycling", worker_id=self.worker_id, reason=reason,
                      claimed=self.claimed, **fields)
            self._request_stop()

    def _on_supervisor_lost(self) -> None:
        log_event(logger, logging.WARNING, "worker.supervisor_lost", worker_id=self.worker_id,
                  supervisor=self.config.supervisor, action="stopping: no supervisor is left to replace or stop it")
        self._request_stop()

    def _on_signal(self, signum: int) -> None:
        # Signals are counted, not compared with _stopping: a worker already stopping on its own
        # (recycling) that gets its supervisor's first SIGTERM still drains; only a second forces.
        self._signals += 1
        if self._signals > 1:
            self._force_stop()
        else:
            log_event(logger, logging.INFO, "worker.signal", signal=signal.Signals(signum).name)
            self._request_stop()

    async def arun(self, *, install_signal_handlers: bool = False) -> None:
        """Run the worker on the current event loop until stopped."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._force = asyncio.Event()
        database = self.app.database
        dsn = await asyncio.to_thread(lambda: database.dsn)
        # One line (and exit) or a retry countdown, instead of the pool's reconnect noise. Before
        # the signal handlers: a SIGTERM while it waits ends the process, which holds nothing yet.
        await await_database(dsn, application_name=database.application_name, wait=self.config.wait_for_database)
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self._on_signal, signum)
        pool = make_async_pool(dsn, application_name=database.application_name, max_size=self.pool_size,
                               name="pgtasks-worker", preparing=database.preparing)
        await pool.open(wait=True, timeout=30.0)
        supervisor_watch: asyncio.Task[None] | None = None
        try:
            await self._check_schema(pool)
            self._task_names = sorted(self.registry.tasks)
            async with pool.connection() as conn:
                await self.flow.declare(conn)
                await self.flow.refresh(conn)
            self.completer = Completer(pool, self.store)
            self.completer.on_written = self._outcomes_written
            self.completer.start()
            self.pool = pool
            await self._start_ops(pool)
            self.maintenance = self._make_maintenance(pool)
            await self._start_listening(pool, dsn)
            await self.maintenance.start()
            await self._log_started(pool)
            self._warn_unserved_queues()
            # Before the first claim: a task may rely on what a worker_ready hook set up.
            self._lifecycle = WorkerEvent(self.worker_id, tuple(self.queues), self.concurrency)
            await self.registry.hooks.ready(self._lifecycle)
            supervisor_watch = asyncio.create_task(self.lifetime.watch_supervisor(self._on_supervisor_lost),
                                                   name="pgtasks-supervisor-watch")
            self.started.set()
            await self._fetch_loop(pool)
        finally:
            await cancel_and_wait(supervisor_watch)
            await self._shutdown(pool)
            if install_signal_handlers:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(signum)

    async def _log_started(self, pool: AsyncConnectionPool[Any]) -> None:
        """One short line: what this worker serves and where (`user@host:port/dbname`, as connected;
        the connection budget is the worker.connections line just before)."""
        async with pool.connection() as conn:
            database = describe_connection(conn)
        log_event(logger, logging.INFO, "worker.started", worker_id=self.worker_id, queues=",".join(self.queues),
                  concurrency=self.concurrency, tasks=len(self.registry.tasks), listen=self.listening,
                  poll_interval_s=self.poll_interval, database=database)

    async def _start_listening(self, pool: AsyncConnectionPool[Any], dsn: str) -> None:
        """Detect the pool mode, decide LISTEN or poll-only (see worker/listening.py), start the notifier."""
        listen_dsn = self.listen_dsn
        if listen_dsn is None:
            listen_dsn = await asyncio.to_thread(lambda: self.app.database.listen_dsn)
        application_name = self.app.database.application_name
        plan = await plan_listening(self.store, dsn, listen_dsn, listen=self.listen, pool_size=self.pool_size,
                                    application_name=application_name)
        self.listen_plan = plan
        async with pool.connection() as conn:
            prepared = self.app.database.preparing.describe(conn)  # as a pool connection found it (auto)
        plan.log(self.worker_id, prepared=prepared)
        if not plan.listen:
            if self.listen is None:
                log_event(logger, logging.INFO, "worker.poll_only", reason=plan.reason,
                          poll_interval_s=self.poll_interval,
                          hint="for instant wakeups give the listener a direct or session-pooled DSN: --listen-dsn")
            return

        async def send_canary(channel: str, payload: str) -> None:
            async with pool.connection() as conn:
                await self.store.achannel_notify(conn, channel, payload)

        self.notifier = Notifier(listen_dsn, jobs_channel(self.store.schema), application_name,
                                 self._on_notify, store=self.store, send_canary=send_canary,
                                 canary_interval=self.config.canary_interval,
                                 canary_timeout=self.config.canary_timeout)
        if self.maintenance is not None:
            self.notifier.subscribe(self.maintenance.channel, self.maintenance.on_leader_notify)
        self.notifier.subscribe(control_channel(self.store.schema), self._on_control)
        self.notifier.start()
        await self.notifier.wait_connected(5.0)

    def _warn_unserved_queues(self) -> None:
        """A task declared with queue="mail" run by a worker of the default queue would wait in
        silence: say so once at start (unless other workers serve those queues, which only
        `pgtasks doctor` can tell)."""
        unserved = unserved_tasks(self.registry, self._queue_set)
        if unserved:
            log_event(logger, logging.WARNING, "worker.unserved_queues", worker_id=self.worker_id,
                      queues=",".join(unserved), tasks=",".join(t for names in unserved.values() for t in names),
                      hint=f"their jobs wait for a worker of those queues: add them to --queues "
                           f"({','.join([*self.queues, *unserved])}) or run another worker for them")

    def _make_maintenance(self, pool: AsyncConnectionPool[Any]) -> Maintenance:
        completer = self.completer
        assert completer is not None

        def held_jobs() -> list[int]:
            return ([job.id for job in self._running.values()] + [job.id for job in self._ready]
                    + completer.pending_job_ids())

        return Maintenance(self.registry, self.store, pool, worker_id=self.worker_id, queues=self.queues,
                           concurrency=self.concurrency, held_jobs=held_jobs, config=self.maintenance_config,
                           supervisor=self.config.supervisor)

    async def _release_unknown_claims(self, conn: Any) -> None:
        """After a lost connection, put back jobs a fetch claimed whose reply never arrived."""
        assert self.completer is not None
        known = ([job.id for job in self._running.values()] + [job.id for job in self._ready]
                 + self.completer.pending_job_ids())
        released = await self.store.ajob_release_unknown_claims(conn, worker_id=self.worker_id, known_ids=known)
        self._claims_uncertain = False
        if released:
            log_event(logger, logging.WARNING, "worker.claims_released", count=len(released),
                      job_ids=",".join(map(str, released)),
                      reason="a fetch committed but its reply was lost with the connection")

    async def _check_schema(self, pool: AsyncConnectionPool[Any]) -> None:
        failures = 0
        while True:
            try:
                async with pool.connection() as conn:
                    version = await self.store.amigration_current_version(conn)
                break
            except ConnectionLostError as exc:
                # The pool opened, so the database is there: an exhausted pooler (08P01
                # query_wait_timeout) or a restart. Wait it out like the fetch loop would.
                failures += 1
                if failures == 1:
                    log_event(logger, logging.WARNING, "worker.startup_waiting", error=str(exc))
                if self._stopping:
                    raise
                await asyncio.sleep(reconnect_delay(failures))
        migrations.require_latest(self.store.schema, version)

    # -- operator cancels and metrics -------------------------------------------------------------

    async def _start_ops(self, pool: AsyncConnectionPool[Any]) -> None:
        """Started after the pool opens, stopped before it closes."""
        self.cancel_watcher = CancelWatcher(pool, self.store, self.cancels, self.poll_interval)
        await self.cancel_watcher.start()
        self.progress_writer = ProgressWriter(pool, self.store)
        self.progress_writer.start()
        self.executor.progress = self.progress_writer
        if self.config.metrics_port is not None:
            metrics = WorkerMetrics(worker_id=self.worker_id, hooks=self.registry.hooks, port=self.config.metrics_port,
                                    gauges=self.gauges, queue_stats=self._queue_stats)
            metrics.start()
            self.metrics = metrics  # published once serving, with the real port

    def _on_control(self, payload: str) -> None:
        """A notification on the control channel: a job to cancel, or limits that changed."""
        if payload == LIMITS_CHANGED:
            self.flow.changed()
            self._on_notify(None)
        elif self.cancel_watcher is not None:
            self.cancel_watcher.on_control(payload)

    async def _stop_ops(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.cancel_watcher is not None:
            await self.cancel_watcher.stop()
            self.cancel_watcher = None
        if self.progress_writer is not None:  # after the outcomes: the last reports still land
            self.executor.progress = None
            await self.progress_writer.stop()
            self.progress_writer = None

    def gauges(self) -> WorkerGauges:
        """This worker's state as its metrics show it."""
        leading = self.maintenance.is_leader if self.maintenance is not None else None
        term = self.maintenance.elector.term if self.maintenance is not None and leading else None
        return WorkerGauges(
            running=len(self._running),
            listening=self.notifier is not None and self.notifier.connected.is_set(),
            leading=leading, term=term or 0,
            pool_stats=self.pool.get_stats() if self.pool is not None else None, pool_max=self.pool_size,
            completer_backlog=self.completer.backlog if self.completer is not None else None)

    def _queue_stats(self) -> list[dict[str, Any]]:
        """Depth and lag per queue (for the metrics' scrape; on a connection of its own, off the loop)."""
        with self.store.errors(), self.app.database.connect() as conn:
            return self.store.queue_stats(conn)

    # -- the fetch loop --------------------------------------------------------------------------

    def _on_notify(self, queue: str | None) -> None:
        if queue is None or queue in self._queue_set:
            self._should_fetch = True
            if self._wake is not None:
                self._wake.set()

    def _current_poll_interval(self) -> float:
        if self.notifier is not None and not self.notifier.connected.is_set():
            return min(self.poll_interval, DEGRADED_POLL_INTERVAL)
        return self.poll_interval

    async def _fetch_loop(self, pool: AsyncConnectionPool[Any]) -> None:
        self._fetch_failures = 0
        self._last_fetch = 0.0
        while not self._stopping:
            # Room for the free slots plus, while jobs are short, one batch claimed ahead. With
            # jobs already waiting locally, wait for half the room before fetching again, so a
            # busy worker fetches in batches instead of one job per freed slot.
            room = self.concurrency + self.fetch_ahead.allowance() - len(self._running) - len(self._ready)
            min_batch = max(1, (self.concurrency + self.fetch_ahead.allowance()) // 2) if self._ready else 1
            jobs_left = self.lifetime.jobs_left(self.claimed)
            if jobs_left is not None:
                # Recycling by job count: claim no more than the budget, and stop once every job
                # claimed has run (none is put back unstarted).
                if jobs_left == 0 and not self._running and not self._ready:
                    self._recycle("max_jobs", max_jobs=self.lifetime.max_jobs)
                    return
                room = min(room, jobs_left)
            if not (self._should_fetch and room >= min_batch):
                await self._wait_for_work()
                continue
            jobs = await self._fetch(pool, room)
            if jobs is None:
                continue
            self._place(jobs)
            if len(jobs) == room:
                self._should_fetch = True  # a full batch: more are probably waiting
            elif (self.burst and not jobs and not self._running and not self._ready and not self.flow.held
                  and await self._drained()):
                log_event(logger, logging.INFO, "worker.drained", worker_id=self.worker_id)
                return

    async def _fetch(self, pool: AsyncConnectionPool[Any], limit: int) -> list[ClaimedJob] | None:
        """Claim up to `limit` jobs; None after a failure (logged once per episode, then backed off)."""
        self._should_fetch = False
        self._last_fetch = time.monotonic()
        try:
            async with pool.connection() as conn:
                if self._claims_uncertain:
                    await self._release_unknown_claims(conn)
                jobs = await self._claim(conn, limit)
        except DatabaseError as exc:
            # A lost connection may have lost a committed fetch's reply with it.
            self._claims_uncertain = self._claims_uncertain or isinstance(exc, ConnectionLostError)
            self._fetch_failures += 1
            if self._fetch_failures == 1:
                log_event(logger, logging.WARNING, "worker.fetch_failing", error=str(exc))
            self._should_fetch = True
            await self._interruptible_sleep(reconnect_delay(self._fetch_failures))
            return None
        if self._fetch_failures:
            log_event(logger, logging.INFO, "worker.fetch_recovered", after_failures=self._fetch_failures)
            self._fetch_failures = 0
        self.fetches += 1
        self.claimed += len(jobs)
        return jobs

    async def _claim(self, conn: Any, limit: int) -> list[ClaimedJob]:
        """The limited queues first (their claim takes only free slots: a job claimed ahead would
        hold one of the limit's places while it waits here), then the others."""
        flow = self.flow
        if flow.refresh_due():
            await flow.refresh(conn)
        jobs: list[ClaimedJob] = []
        if flow.limited:
            free = min(limit, self.concurrency - len(self._running) - len(self._ready))
            if free > 0:
                claim = await self.store.ajob_fetch_limited(conn, queues=flow.limited, limit=free,
                                                            worker_id=self.worker_id, tasks=self._task_names)
                flow.record(claim, free)
                jobs = claim.jobs
            if len(flow.limited) == len(self._queue_set):
                return jobs
        if limit > len(jobs):
            jobs += await self.store.ajob_fetch_available(conn, queues=self.queues, limit=limit - len(jobs),
                                                          worker_id=self.worker_id, tasks=self._task_names)
        return jobs

    def _outcomes_written(self) -> None:
        """Outcomes left `running`: jobs a limit held back, or left behind a full limited batch, may fit now."""
        if self.flow.claim_when_a_slot_frees():
            self._on_notify(None)

    def _place(self, jobs: list[ClaimedJob]) -> None:
        """Start claimed jobs in free slots; the rest wait locally, in claim order."""
        for job in jobs:
            if len(self._running) < self.concurrency:
                self._start_job(job)
                continue
            if not self._ready:
                self._slot_freed_at = time.monotonic()
            self._ready.append(job)
            self.claimed_ahead += 1

    async def _wait_for_work(self) -> None:
        """Sleep until woken (a NOTIFY, a freed slot, a stop) or the poll is due, then check for a stall."""
        assert self._wake is not None
        timeout: float | None
        if self._should_fetch:
            # A fetch is due but every slot is taken: only a job finishing (or a stop) makes
            # room, and both set _wake. Waiting for the poll here instead would spin: once the
            # poll is overdue its timeout is 0, and the loop would burn a core while saturated.
            timeout = None
        else:
            timeout = max(0.0, self._last_fetch + self._current_poll_interval() - time.monotonic())
            token_in = self.flow.seconds_until_wake()  # a rate limit held a job back until then
            if token_in is not None:
                timeout = min(timeout, token_in)
        if self._ready:
            timeout = STALL_SECONDS if timeout is None else min(timeout, STALL_SECONDS)
        self.waits += 1
        if not await wait_event(self._wake, timeout):
            # The poll (the safety net for missed or absent NOTIFYs), or only a stall check.
            poll_due = time.monotonic() >= self._last_fetch + self._current_poll_interval()
            token_due = self.flow.wake_at is not None and time.monotonic() >= self.flow.wake_at
            if token_due:
                self.flow.wake_at = None
            self._should_fetch = self._should_fetch or poll_due or token_due
        self._wake.clear()
        self._return_if_stalled()

    async def _drained(self) -> bool:
        """Burst mode: only after every outcome is written can an empty fetch mean "nothing due".

        (A retry with no delay becomes claimable only once its outcome is written.)
        """
        assert self.completer is not None
        if self.completer.backlog == 0:
            return True
        await self.completer.flush()
        self._should_fetch = True
        return False

    async def _interruptible_sleep(self, seconds: float) -> None:
        assert self._wake is not None
        await wait_event(self._wake, seconds)
        self._wake.clear()

    def _start_job(self, job: ClaimedJob) -> None:
        task = asyncio.create_task(self._run_job(job), name=f"pgtasks-job-{job.id}")
        self._running[task] = job
        task.add_done_callback(self._job_done)

    async def _run_job(self, job: ClaimedJob) -> None:
        assert self.completer is not None
        started = time.monotonic()
        outcome = await self.executor.run(job)
        duration = time.monotonic() - started
        self.fetch_ahead.observe(duration)
        self.completer.submit(outcome, job_line(job, outcome, duration))

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._slot_freed_at = time.monotonic()
        megabytes = self.lifetime.memory_over()
        if megabytes is not None:  # the jobs grew the process: stop before it starts another
            self._recycle("max_memory", rss_mb=round(megabytes, 1), max_memory_mb=self.lifetime.max_memory_mb)
        if self._ready and not self._stopping:
            self._start_job(self._ready.popleft())
        if not task.cancelled() and task.exception() is not None:
            log_event(logger, logging.ERROR, "worker.job_crashed", error=repr(task.exception()))
        if self._wake is not None:
            self._wake.set()

    # -- shutdown ----------------------------------------------------------------------------------

    async def _shutdown(self, pool: AsyncConnectionPool[Any]) -> None:
        assert self._force is not None
        self._stopping = True
        if self.maintenance is not None:  # resign first: a follower takes over while we drain
            await self.maintenance.step_down()
        self._return_unstarted()
        if self._running and not self._forced:
            await self._wait_running_or_forced(asyncio.create_task(self._force.wait()))
        leftover = dict(self._running)
        # Cancelled again every JOB_RECANCEL_AFTER seconds until done: a job whose code lost the
        # CancelledError (see pgtasks/aio.py) must not keep the worker from stopping, while a
        # job's own async cleanup on cancel gets that long before it is interrupted.
        await asyncio.gather(*(cancel_and_wait(task, recancel_after=JOB_RECANCEL_AFTER) for task in leftover),
                             return_exceptions=True)
        put_back = [job for task, job in leftover.items() if task.cancelled()]
        if put_back and self.completer is not None:
            now = datetime.now(UTC)
            for job in put_back:
                error = ErrorEntry(job.attempt, now, "WorkerShutdown",
                                   f"worker {self.worker_id} shut down before the job finished; put back to run again")
                self.completer.submit(Outcome.put_back(job, error))
            log_event(logger, logging.WARNING, "worker.jobs_put_back", count=len(put_back),
                      job_ids=",".join(str(j.id) for j in put_back))
        if self.completer is not None:
            flushed = await self.completer.flush(timeout=5.0 if self._forced else 30.0)
            if not flushed:
                log_event(logger, logging.ERROR, "worker.outcomes_unwritten", backlog=self.completer.backlog)
            await self.completer.stop()
        await self._stop_ops()
        if self.notifier is not None:
            await self.notifier.stop()
        if self.maintenance is not None:  # after the outcomes are written: then the worker row goes
            await self.maintenance.stop()
        await pool.close()
        self.threads.shutdown()
        if self._lifecycle is not None:  # every job has finished or been put back: tear down
            await self.registry.hooks.shutdown(self._lifecycle)
        log_event(logger, logging.INFO, "worker.stopped", worker_id=self.worker_id, claimed=self.claimed)

    def _return_unstarted(self, reason: str = "shutdown") -> None:
        """Give back the jobs claimed ahead that never started: claimable again at once, no attempt used."""
        unstarted = list(self._ready)
        self._ready.clear()
        if unstarted and self.completer is not None:
            for job in unstarted:
                self.completer.submit(Outcome.put_back(job))
            log_event(logger, logging.INFO, "worker.unstarted_returned", count=len(unstarted), reason=reason)

    def _return_if_stalled(self) -> None:
        """Jobs wait locally but no slot has freed up for STALL_SECONDS: the short jobs turned long.

        Give the waiting jobs back so other workers can run them, and stop claiming ahead until
        short jobs are seen again.
        """
        stalled = time.monotonic() - self._slot_freed_at
        if self._ready and stalled >= STALL_SECONDS:
            self.fetch_ahead.stalled(stalled)
            self._return_unstarted(reason="stalled")

    async def _wait_running_or_forced(self, waiter: asyncio.Task[bool]) -> None:
        deadline = time.monotonic() + self.grace
        try:
            while self._running and not self._forced:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.wait([*self._running, waiter], timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
