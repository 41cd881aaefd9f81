"""asyncio waits and cancels that stay correct on Python 3.11.

Python 3.11's asyncio.wait_for() loses a cancellation that arrives in the same loop iteration as
the awaited thing completes: it returns the result instead of raising CancelledError (fixed in
3.12, where wait_for is built on asyncio.timeout). A service loop that sleeps with
wait_for(event.wait(), t) and is cancelled just as someone sets the event then keeps running, and
whoever awaits it after cancel() waits forever. CI hit exactly that: a worker that never stopped.
So pgtasks never uses wait_for on its own tasks: these helpers use asyncio.timeout(), which counts
cancel requests, and cancel_and_wait() repeats the cancel until the task has really ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pgtasks.core.logs import log_event

logger = logging.getLogger("pgtasks.aio")

# How long cancel_and_wait() waits for a cancelled task before it cancels it again.
RECANCEL_AFTER = 1.0


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; True if it was set.

    A cancellation of the waiting task always propagates, even if the event is set at that moment.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, recancel_after: float | None = None) -> None:
    """Cancel a task and wait until it has unwound (its finally blocks have run).

    If the task is still running `recancel_after` seconds after a cancel (its code swallowed the
    CancelledError, e.g. through the 3.11 wait_for race above), it is cancelled again, and so on:
    a stop() never hangs on a lost cancellation. A cancellation of the caller propagates.

    An exception the task ended with is logged (`task.crashed`, with its traceback), not raised:
    stop() runs in shutdown sequences, and one service that crashed earlier must not keep the
    rest (putting jobs back, writing outcomes, closing pools) from running.
    """
    if task is None:
        return
    if recancel_after is None:
        recancel_after = RECANCEL_AFTER
    attempts = 0
    while not task.done():
        task.cancel()
        attempts += 1
        if attempts == 2:
            log_event(logger, logging.WARNING, "task.cancel_repeated", task=task.get_name(),
                      reason=f"still running {recancel_after}s after cancel(); its cancellation was lost")
        await asyncio.wait([task], timeout=recancel_after)
    error = None if task.cancelled() else task.exception()
    if error is not None:
        logger.error("task.crashed task=%s error=%r", task.get_name(), error, exc_info=error,
                     extra={"event": "task.crashed", "fields": {"task": task.get_name(), "error": repr(error)}})
