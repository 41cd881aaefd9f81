"""Live updates: one feed per dashboard process turns database changes into server-sent events.

However many browser tabs are open, the process holds one LISTEN connection (when LISTEN works
on the DSN, detected as the worker detects it) and runs one cheap poll of a change mark every
`refresh_interval` seconds. NOTIFYs cover inserts, finished jobs and leadership at once; the poll
covers what sends no NOTIFY (claims, workers coming and going, pauses) and is the whole feed
behind a transaction pooler. Changes are debounced and sent to every subscriber as topics
("jobs", "queues", "workers", "leader"); a page re-fetches the regions that show them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pgtasks.core.aio import cancel_and_wait
from pgtasks.core.channels import done_channel, jobs_channel, leader_channel
from pgtasks.core.logs import log_event
from pgtasks.core.retry import reconnect_delay
from pgtasks.storage.database import Database
from pgtasks.storage.poolmode import PoolMode
from pgtasks.storage.store import Store
from pgtasks.worker.listening import plan_listening
from pgtasks.worker.notifier import Notifier

logger = logging.getLogger("pgtasks.dashboard")

TOPICS = ("jobs", "queues", "workers", "leader")
# The topic a change in each column of the change mark means (dashboard_change_mark).
MARK_TOPICS = {"last_id": "jobs", "last_finalized": "jobs", "running": "jobs", "last_claimed": "jobs",
               "queues_changed": "queues", "workers": "workers", "workers_started": "workers",
               "leader_term": "leader"}
# After a detection that could not tell whether LISTEN works (the database was down), how long to
# wait before detecting again once the database answers.
REDETECT_AFTER = 30.0
# Changes closer together than this are sent to the browsers as one: the first goes out at once,
# the ones after it within this window wait for its end (a burst of completions costs each open
# page one refresh per window, and a lone change is not delayed).
DEBOUNCE = 0.2
# A subscriber's queue holds merged topics; one slot is enough (a slow tab gets one merged change).
_QUEUE_SLOTS = 1


class LiveFeed:
    """The process's one source of change events. Starts on first use, on the running event loop
    (a mounted ASGI app gets no lifespan events, so it cannot start earlier)."""

    def __init__(self, database: Database, store: Store, *, refresh_interval: float = 2.0,
                 listen: bool | None = None, debounce: float = DEBOUNCE,
                 mark_reader: Callable[[], dict[str, Any]] | None = None) -> None:
        if refresh_interval <= 0:
            raise ValueError(f"refresh_interval={refresh_interval!r}: must be > 0 seconds")
        self._database = database
        self._store = store
        self.refresh_interval = refresh_interval
        self._listen = listen
        self._debounce = debounce
        self._read_mark = mark_reader or self._read_mark_from_pool
        self._subscribers: set[asyncio.Queue[frozenset[str]]] = set()
        self._pending: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._last_sent = float("-inf")
        self._tasks: list[asyncio.Task[None]] = []
        self._notifier: Notifier | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock: asyncio.Lock | None = None
        self._redetect_at: float | None = None
        self.mode = "starting"  # "push" (LISTEN) or "poll", once started
        self.reason = ""
        self.events_sent = 0

    # -- subscribers ------------------------------------------------------------------------

    async def subscribe(self) -> asyncio.Queue[frozenset[str]]:
        await self._ensure_started()
        queue: asyncio.Queue[frozenset[str]] = asyncio.Queue(_QUEUE_SLOTS)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[frozenset[str]]) -> None:
        self._subscribers.discard(queue)

    def changed(self, *topics: str) -> None:
        """Announce a change now (the dashboard's own actions call it; so do notifications)."""
        self._pending.update(topics)
        if self._flush is None and self._loop is not None:
            wait = self._last_sent + self._debounce - time.monotonic()
            self._flush = self._loop.call_later(max(0.0, wait), self._send)

    def _send(self) -> None:
        self._flush = None
        self._last_sent = time.monotonic()
        topics, self._pending = frozenset(self._pending), set()
        if not topics:
            return
        self.events_sent += 1
        for queue in self._subscribers:
            if queue.full():  # merge into the change the subscriber has not read yet
                topics_waiting = queue.get_nowait()
                queue.put_nowait(topics_waiting | topics)
            else:
                queue.put_nowait(topics)

    # -- life cycle -------------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # First use, or the app now runs on another loop (tests open one per client). The old
            # loop's tasks and LISTEN connection are stopped on that loop if it still runs (or went
            # with it); its subscribers' queues belong to it too.
            old_loop, old_parts = self._loop, (self._tasks, self._notifier)
            if old_loop is not None and old_loop.is_running() and not old_loop.is_closed():
                asyncio.run_coroutine_threadsafe(_stop(*old_parts), old_loop)
            self._loop, self._tasks, self._notifier, self._flush = loop, [], None, None
            self._subscribers = set()
            self._start_lock = asyncio.Lock()
        assert self._start_lock is not None
        async with self._start_lock:
            if self._tasks:
                return
            self._tasks.append(loop.create_task(self._poll_loop(), name="pgtasks-dashboard-poll"))
            await self._start_listening()

    async def _start_listening(self) -> None:
        dsn = await asyncio.to_thread(lambda: self._database.dsn)
        listen_dsn = await asyncio.to_thread(lambda: self._database.listen_dsn)
        plan = await plan_listening(self._store, dsn, listen_dsn, listen=self._listen, pool_size=0,
                                    application_name=self._database.application_name + "-dashboard")
        if not plan.listen:
            self.mode, self.reason = "poll", plan.reason
            undecided = [d for d in (plan.database, plan.listener) if d is not None and d.mode is PoolMode.UNKNOWN]
            if undecided and self._listen is not False:
                # Detection failed (the database was down, say), which says nothing about the
                # pooler: poll for now, and detect again once the database answers.
                self._redetect_at = time.monotonic() + REDETECT_AFTER
                self.reason += f"; detecting again in {REDETECT_AFTER:g} s"
            log_event(logger, logging.INFO, "dashboard.poll_only", reason=plan.reason,
                      refresh_interval_s=self.refresh_interval,
                      hint="for push updates give the dashboard a direct or session-pooled listen_dsn")
            return
        schema = self._store.schema
        notifier = Notifier(listen_dsn, jobs_channel(schema), self._database.application_name + "-dashboard",
                            self._on_wake, store=self._store, send_canary=self._send_canary)
        notifier.subscribe(done_channel(schema), lambda _payload: self.changed("jobs"))
        notifier.subscribe(leader_channel(schema), lambda _payload: self.changed("leader"))
        notifier.start()
        self._notifier = notifier
        self.mode, self.reason = "push", plan.reason
        log_event(logger, logging.INFO, "dashboard.listening", reason=plan.reason)

    def _on_wake(self, queue: str | None) -> None:
        # A NOTIFY on the jobs channel (an insert, a resume); None after a (re)connect, when what
        # was sent meanwhile is lost: refresh everything.
        self.changed(*(("jobs", "queues") if queue is not None else TOPICS))

    async def _send_canary(self, channel: str, payload: str) -> None:
        def send() -> None:
            with self._database.pool().connection() as conn:
                self._store.notify_send(conn, channel, [payload])
        await asyncio.to_thread(send)

    async def _poll_loop(self) -> None:
        previous: dict[str, Any] | None = None
        failures = 0
        while True:
            started = time.monotonic()
            try:
                mark = await asyncio.to_thread(self._read_mark)
            except Exception as exc:  # noqa: BLE001 - a lost database must not end live updates for good
                failures += 1
                log_event(logger, logging.WARNING, "dashboard.poll_failed", error=f"{type(exc).__name__}: {exc}",
                          failures=failures)
                await asyncio.sleep(reconnect_delay(failures, cap=self.refresh_interval * 5))
                continue
            failures = 0
            if previous is not None:
                topics = {topic for column, topic in MARK_TOPICS.items() if previous[column] != mark[column]}
                if topics:
                    self.changed(*topics)
            previous = mark
            if self._redetect_at is not None and time.monotonic() >= self._redetect_at:
                self._redetect_at = None
                await self._start_listening()
            await asyncio.sleep(max(0.0, self.refresh_interval - (time.monotonic() - started)))

    def _read_mark_from_pool(self) -> dict[str, Any]:
        with self._database.pool().connection() as conn:
            return self._store.dashboard_change_mark(conn)

    async def aclose(self) -> None:
        parts = (self._tasks, self._notifier)
        self._tasks, self._notifier = [], None
        await _stop(*parts)
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    def describe(self) -> str:
        if self.mode == "push":
            return "live: pushed by LISTEN/NOTIFY"
        if self.mode == "poll":
            return f"live: polled every {self.refresh_interval:g} s ({self.reason})"
        return "live: starting"



async def _stop(tasks: list[asyncio.Task[None]], notifier: Notifier | None) -> None:
    for task in tasks:
        await cancel_and_wait(task)
    if notifier is not None:
        await notifier.stop()
