"""A task module for acceptance tests that run `pgtasks worker` as a subprocess."""

from __future__ import annotations

import asyncio
import time

import pgtasks

app = pgtasks.App()  # PGTASKS_DATABASE_URL and PGTASKS_SCHEMA come from the test's environment


@app.task(name="slow.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="slow.asleep")
async def asleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds
