"""Drives the periodic scheduler of tests.apps.periodic_app with no elector, as a process that
believes it leads; two of these racing over the same ticks must still enqueue each tick once.

Usage: python -m tests.apps.dual_scheduler FIRST_TICK_EPOCH TICKS. Prints "ready" once connected,
then reads the start time (epoch seconds) from stdin, and prints JSON stats at the end: the test
starts both processes, waits for both to be ready, and gives both the same start.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta

import msgspec

from pgtasks.leadership.scheduler import PeriodicScheduler
from pgtasks.storage.connections import make_async_pool
from tests.apps.periodic_app import app


async def main(first_tick: float, ticks: int) -> dict[str, int]:
    pool = make_async_pool(app.dsn, application_name="dual-scheduler", max_size=1, name="dual")
    await pool.open(wait=True)
    print("ready", flush=True)
    start = float(await asyncio.to_thread(sys.stdin.readline))
    scheduler = PeriodicScheduler(app.registry, app.store, pool)  # no elector: it always acts, as a stale leader would
    base = datetime.fromtimestamp(first_tick, UTC)
    recorded = 0
    try:
        for i in range(ticks + 1):
            # Both processes run pass i in the same 50 ms slot, so they race for the same tick.
            await asyncio.sleep(max(0.0, start + i * 0.05 - time.time()))
            # i = 0 registers the schedules; then one pass just after each tick of every-second.
            fires = await scheduler.tick(now=base + timedelta(seconds=i, milliseconds=100))
            recorded += sum(1 for f in fires if f.schedule == "every-second" and f.outcome == "enqueued")
    finally:
        await pool.close()
    return {"enqueued_here": recorded}


if __name__ == "__main__":
    stats = asyncio.run(main(float(sys.argv[1]), int(sys.argv[2])))
    print(msgspec.json.encode(stats).decode())
