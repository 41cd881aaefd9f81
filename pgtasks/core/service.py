"""The shape every background service shares: idempotent start/stop, run_once(), a loop that survives outages."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from pgtasks.core.aio import cancel_and_wait, wait_event
from pgtasks.core.errors import DatabaseError
from pgtasks.core.logs import log_event
from pgtasks.core.retry import reconnect_delay

logger = logging.getLogger("pgtasks.service")


class IntervalService:
    """Calls run_once() every `interval` seconds until stopped.

    Database errors never end the loop: the first failure is logged once at WARNING, the loop
    backs off (capped, jittered), and the recovery is logged at INFO. Subclasses implement
    run_once(now=None) so tests can drive them step by step without sleeping.
    """

    name = "service"

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"{type(self).__name__}: interval must be > 0, got {interval!r}")
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def run_once(self, now: datetime | None = None) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if not self.running:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name=f"pgtasks-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def poke(self) -> None:
        """Run the next iteration now instead of after the interval."""
        self._wake.set()

    async def _loop(self) -> None:
        failures = 0
        while True:
            try:
                await self.run_once()
            except DatabaseError as exc:
                failures += 1
                if failures == 1:
                    log_event(logger, logging.WARNING, f"{self.name}.failing", error=str(exc))
                await self._sleep(reconnect_delay(failures))
                continue
            if failures:
                log_event(logger, logging.INFO, f"{self.name}.recovered", after_failures=failures)
                failures = 0
            await self._sleep(self.interval)

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._wake, seconds)
        self._wake.clear()
