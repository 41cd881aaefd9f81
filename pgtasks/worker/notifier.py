"""The worker's LISTEN connection: turns NOTIFYs into wakeups and proves itself alive with a canary."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from psycopg import AsyncConnection

from pgtasks.core.aio import cancel_and_wait, wait_event
from pgtasks.core.logs import log_event
from pgtasks.core.retry import reconnect_delay
from pgtasks.storage.connections import connection_kwargs
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.worker")

# Seconds between canaries on a healthy listener, and how long one may take to come back.
CANARY_INTERVAL = 5.0
CANARY_TIMEOUT = 5.0


class ListenerUnhealthyError(Exception):
    """The canary NOTIFY did not come back: the LISTEN connection is up but deaf."""


class Notifier:
    """Holds one dedicated connection that LISTENs, reconnecting with backoff when it is lost.

    `on_wake(queue)` is called for each notification on the jobs channel, and `on_wake(None)`
    after every (re)connect, since notifications sent while disconnected are gone and a fetch must
    catch up. Other channels can be added with subscribe() before start().

    A connection can die without an error reaching us: a half-open TCP connection, a pooler
    that lost the server behind it, a backend that stopped receiving. So every `canary_interval`
    seconds the notifier has `send_canary(channel, token)` NOTIFY its own channel from another
    connection (the path every producer's NOTIFY takes) and expects it back within
    `canary_timeout`. If it does not come, the connection is dropped and made again. `connected`
    is set only while the last canary came back; while it is clear the worker polls fast.
    A canary that could not even be sent says nothing about the listener and is not held against it.
    """

    def __init__(
        self,
        dsn: str,
        channel: str,
        application_name: str,
        on_wake: Callable[[str | None], None],
        *,
        store: Store,
        send_canary: Callable[[str, str], Awaitable[None]],
        canary_interval: float = CANARY_INTERVAL,
        canary_timeout: float = CANARY_TIMEOUT,
    ) -> None:
        if canary_interval <= 0 or canary_timeout <= 0:
            raise ValueError(f"canary_interval={canary_interval!r}, canary_timeout={canary_timeout!r}: must be > 0")
        self._dsn = dsn
        self._channel = channel
        self._application_name = application_name
        self._on_wake = on_wake
        self._store = store
        self._send_canary = send_canary
        self.canary_interval = canary_interval
        self.canary_timeout = canary_timeout
        # One channel per notifier, so canaries of other workers never reach this one.
        self.canary_channel = f"pgtasks.canary.{uuid.uuid4().hex[:16]}"
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self.connected = asyncio.Event()
        self.notifications = 0
        self.reconnects = 0
        self.canaries_ok = 0
        self.canaries_missed = 0
        self.backend_pid: int | None = None

    def subscribe(self, channel: str, handler: Callable[[str], None]) -> None:
        """Also LISTEN on `channel` and pass each payload to `handler`. Call before start()."""
        if channel in (self._channel, self.canary_channel):
            raise ValueError(f"channel {channel!r} is already used by the notifier")
        self._handlers[channel] = handler

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="pgtasks-notifier")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.connected.clear()

    async def wait_connected(self, timeout: float) -> bool:
        return await wait_event(self.connected, timeout)

    async def _loop(self) -> None:
        while True:
            try:
                kwargs = connection_kwargs(self._application_name + "-listener")
                conn = await AsyncConnection.connect(self._dsn, **kwargs)
                async with conn:
                    self.backend_pid = conn.info.backend_pid
                    for channel in (self._channel, self.canary_channel, *self._handlers):
                        await self._store.achannel_listen(conn, channel)
                    # Notifications sent while we were away are gone: catch up with a fetch.
                    self._on_wake(None)
                    await self._listen(conn)
                # _listen() only returns when the server closes the connection.
                raise ConnectionError("listener connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, never die silently
                self.connected.clear()
                self._failures += 1
                if self._failures == 1:
                    log_event(logger, logging.WARNING, "listener.lost", error=str(exc) or type(exc).__name__,
                              action="reconnecting; the worker polls fast meanwhile")
                await asyncio.sleep(reconnect_delay(self._failures, cap=5.0))

    async def _listen(self, conn: AsyncConnection[object]) -> None:
        """Deliver notifications and run the canary until the connection fails or goes deaf."""
        canary = _Canary(self, self._send)
        try:
            while True:
                wait = canary.advance(time.monotonic())
                async with contextlib.aclosing(conn.notifies(timeout=max(wait, 0.001))) as notifies:
                    async for notify in notifies:
                        if notify.channel == self.canary_channel:
                            if canary.arrived(notify.payload):
                                self._healthy()
                        elif notify.channel == self._channel:
                            self.notifications += 1
                            self._on_wake(notify.payload)
                        elif notify.channel in self._handlers:
                            self._handlers[notify.channel](notify.payload)
        finally:
            canary.cancel()

    async def _send(self, token: str) -> bool:
        try:
            async with asyncio.timeout(self.canary_timeout):
                await self._send_canary(self.canary_channel, token)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed send is logged and retried, not fatal
            log_event(logger, logging.DEBUG, "listener.canary_unsent", error=str(exc) or type(exc).__name__)
            return False
        return True

    def _healthy(self) -> None:
        self.canaries_ok += 1
        if not self.connected.is_set():
            if self._failures:
                log_event(logger, logging.INFO, "listener.recovered", after_failures=self._failures)
                self.reconnects += 1
            self._failures = 0
            self.connected.set()


class _Canary:
    """One listener connection's canary: a NOTIFY sent through the pool that must come back in time."""

    def __init__(self, notifier: Notifier, send: Callable[[str], Coroutine[Any, Any, bool]]) -> None:
        self._notifier = notifier
        self._send = send
        self.token: str | None = None  # the canary in flight, if any
        self.sent_at: float | None = None  # when it was committed (None: still being sent)
        self.sender: asyncio.Task[bool] | None = None
        self.next_check = time.monotonic()  # a fresh connection is checked at once

    def advance(self, now: float) -> float:
        """Send a canary when one is due, note its send; raise if it is overdue. Returns how long to listen."""
        notifier = self._notifier
        if self.token is None and now >= self.next_check:
            self.token, self.sent_at = uuid.uuid4().hex, None
            self.sender = asyncio.create_task(self._send(self.token), name="pgtasks-canary")
        if self.sender is not None and self.sender.done():
            if self.sender.result():
                self.sent_at = self.sent_at or now
            else:  # not sent (the pool's trouble, not the listener's): try again later
                self.token, self.next_check = None, now + notifier.canary_interval
            self.sender = None
        if self.token is not None and self.sent_at is not None and now - self.sent_at > notifier.canary_timeout:
            notifier.canaries_missed += 1
            raise ListenerUnhealthyError(f"canary NOTIFY on {notifier.canary_channel} did not arrive within "
                                         f"{notifier.canary_timeout:g}s")
        if self.token is None:
            return self.next_check - now
        if self.sent_at is None:
            return 0.05  # the send is in flight: look again soon
        return self.sent_at + notifier.canary_timeout - now

    def arrived(self, payload: str) -> bool:
        """True if `payload` is the canary in flight (which is then done)."""
        if self.token is None or payload != self.token:
            return False
        self.token, self.next_check = None, time.monotonic() + self._notifier.canary_interval
        return True

    def cancel(self) -> None:
        if self.sender is not None:
            self.sender.cancel()
