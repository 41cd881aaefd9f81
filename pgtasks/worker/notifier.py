"""The worker's LISTEN connection: turns NOTIFYs on the jobs channel into wakeups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from psycopg import AsyncConnection, sql

from pgtasks.connections import connection_kwargs
from pgtasks.logs import log_event
from pgtasks.service import backoff_delay

logger = logging.getLogger("pgtasks.worker")


class Notifier:
    """Holds one dedicated connection that LISTENs, reconnecting with backoff when it is lost.

    `on_wake(queue)` is called for each notification, and `on_wake(None)` after every
    (re)connect, since notifications sent while disconnected are gone and a fetch must catch up.
    `connected` tells the worker whether wakeups can be trusted; when they cannot, it polls faster.
    """

    def __init__(self, dsn: str, channel: str, application_name: str, on_wake: Callable[[str | None], None]) -> None:
        self._dsn = dsn
        self._channel = channel
        self._application_name = application_name
        self._on_wake = on_wake
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.notifications = 0
        self.reconnects = 0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="pgtasks-notifier")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected.clear()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _loop(self) -> None:
        failures = 0
        while True:
            try:
                kwargs = connection_kwargs(self._application_name + "-listener")
                conn = await AsyncConnection.connect(self._dsn, **kwargs)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    if failures:
                        log_event(logger, logging.INFO, "listener.recovered", after_failures=failures)
                        self.reconnects += 1
                    failures = 0
                    self.connected.set()
                    self._on_wake(None)
                    async for notify in conn.notifies():
                        self.notifications += 1
                        self._on_wake(notify.payload)
                # notifies() only ends when the connection closes.
                raise ConnectionError("listener connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, never die silently
                self.connected.clear()
                failures += 1
                if failures == 1:
                    log_event(logger, logging.WARNING, "listener.lost", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff_delay(failures, cap=5.0))
