"""A service waiting for a pool connection when it is stopped must stop (real PostgreSQL).

psycopg_pool waits for a free connection with asyncio.wait_for; on Python 3.11 a cancel that
lands in the loop iteration where the connection is handed over is lost, and the service runs on.
Measured while fixing the CI hang: 30 of 50 such cancels were lost. stop() must end anyway.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from pgtasks.core import aio
from pgtasks.core.service import IntervalService
from pgtasks.storage.connections import make_async_pool


class _PoolUser(IntervalService):
    name = "pool_user"

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        super().__init__(interval=0.01)
        self.pool = pool
        self.runs = 0

    async def run_once(self, now: datetime | None = None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")
            self.runs += 1


def test_stop_ends_even_when_the_pool_swallows_the_cancel(database_url: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aio, "RECANCEL_AFTER", 0.2)  # the default 1 s only makes the test slower

    async def scenario() -> int:
        pool = make_async_pool(database_url, application_name="pgtasks-test", max_size=1, name="test")
        await pool.open(wait=True)
        stopped = 0
        try:
            for round_ in range(12):
                held = await pool.getconn()  # the service now waits in the pool for the only connection
                service = _PoolUser(pool)
                await service.start()
                await asyncio.sleep(0.02)
                await pool.putconn(held)  # hand it over ...
                for _ in range(round_ % 4):
                    await asyncio.sleep(0)
                async with asyncio.timeout(10):  # ... and stop right then: this must not hang
                    await service.stop()
                assert not service.running
                stopped += 1
        finally:
            await pool.close()
        return stopped

    assert asyncio.run(scenario()) == 12
