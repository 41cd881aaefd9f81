"""The asyncio helpers that keep stop() from hanging on Python 3.11 (pgtasks/aio.py).

Each test makes the race happen on purpose: the event is set, or the task's wait completes, in
the same loop iteration as the cancel. With asyncio.wait_for on 3.11 the cancel was lost and the
stop waited forever; CI saw a worker that never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pgtasks.core.aio import cancel_and_wait, wait_event
from pgtasks.core.service import IntervalService


def test_wait_event_reports_set_and_timeout() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_event(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        woken = await wait_event(event, 5)
        already = await wait_event(event, 0)
        return timed_out, woken, already

    assert asyncio.run(scenario()) == (False, True, True)


def test_cancel_is_not_lost_when_the_event_is_set_in_the_same_iteration() -> None:
    async def scenario() -> int:
        event = asyncio.Event()
        rounds = 0

        async def sleeper() -> None:
            nonlocal rounds
            while True:
                await wait_event(event, 10)
                event.clear()
                rounds += 1

        task = asyncio.create_task(sleeper())
        await asyncio.sleep(0.01)
        event.set()
        task.cancel()  # same iteration as the set: wait_for() on 3.11 would return instead of raising
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(2):
                await task
        return rounds

    assert asyncio.run(scenario()) == 0


def test_cancel_and_wait_recancels_a_task_that_swallowed_the_cancel() -> None:
    async def scenario() -> int:
        swallowed = 0

        async def stubborn() -> None:
            nonlocal swallowed
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    if swallowed == 0:  # lose the first cancel, as the 3.11 wait_for race does
                        swallowed += 1
                        continue
                    raise

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0.01)
        async with asyncio.timeout(5):
            await cancel_and_wait(task, recancel_after=0.05)
        assert task.cancelled()
        return swallowed

    assert asyncio.run(scenario()) == 1


def test_cancel_and_wait_logs_what_the_task_raised_and_lets_its_caller_be_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async def broken() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                raise RuntimeError("cleanup failed")

        task = asyncio.create_task(broken(), name="broken-service")
        await asyncio.sleep(0.01)
        await cancel_and_wait(task)  # logged, not raised: the rest of a shutdown must still run

        async def endless() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)
            await asyncio.sleep(10)  # ignores the first cancel, then sleeps again

        inner = asyncio.create_task(endless())
        outer = asyncio.create_task(cancel_and_wait(inner, recancel_after=10))
        await asyncio.sleep(0.01)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        inner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await inner

    asyncio.run(scenario())
    [crash] = [r for r in caplog.records if getattr(r, "event", None) == "task.crashed"]
    assert crash.levelname == "ERROR" and "broken-service" in crash.getMessage()
    assert crash.exc_info is not None and "cleanup failed" in str(crash.exc_info[1])


class _Crashing(IntervalService):
    name = "crashing"

    def __init__(self) -> None:
        super().__init__(interval=10)

    async def run_once(self, now: object = None) -> None:
        raise ValueError("a bug, not a database error")


def test_stopping_a_service_that_crashed_earlier_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        service = _Crashing()
        await service.start()
        await asyncio.sleep(0.01)  # the loop has died of the ValueError by now
        assert not service.running
        await service.stop()

    asyncio.run(scenario())
    [crash] = [r for r in caplog.records if getattr(r, "event", None) == "task.crashed"]
    assert "a bug, not a database error" in crash.getMessage()


class _Ticker(IntervalService):
    name = "ticker"

    def __init__(self) -> None:
        super().__init__(interval=10)
        self.runs = 0

    async def run_once(self, now: object = None) -> None:
        self.runs += 1


def test_a_service_poked_as_it_is_stopped_still_stops() -> None:
    async def scenario() -> int:
        service = _Ticker()
        await service.start()
        await asyncio.sleep(0.01)  # first run done; the loop sleeps for the 10 s interval
        service.poke()
        async with asyncio.timeout(5):
            await service.stop()
        assert not service.running
        return service.runs

    assert asyncio.run(scenario()) == 1
