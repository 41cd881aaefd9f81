"""ElasticThreadPool.run_async: sync callables on pool threads, results delivered to the event loop."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest

from pgtasks.worker.threads import ElasticThreadPool


def test_results_and_exceptions_arrive_on_the_loop() -> None:
    async def main() -> None:
        pool = ElasticThreadPool()
        try:
            futures = [pool.run_async(functools.partial(pow, i, 2)) for i in range(200)]
            assert await asyncio.gather(*futures) == [i * i for i in range(200)]

            def fail() -> None:
                raise ValueError("no")

            with pytest.raises(ValueError, match="no"):
                await pool.run_async(fail)

            def stop() -> None:
                raise StopIteration

            with pytest.raises(RuntimeError, match="StopIteration") as caught:
                await pool.run_async(stop)
            assert isinstance(caught.value.__cause__, StopIteration)
        finally:
            pool.shutdown()

    asyncio.run(main())


def test_a_burst_of_results_wakes_the_loop_far_fewer_times_than_once_each() -> None:
    wakeups = 0

    async def main() -> None:
        nonlocal wakeups
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counting(*args: object, **kwargs: object) -> asyncio.Handle:
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kwargs)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        pool = ElasticThreadPool()
        gate = threading.Event()
        at_gate = threading.Barrier(51)

        def wait_at_gate() -> bool:
            at_gate.wait(30)
            return gate.wait(30)

        try:
            futures = [pool.run_async(wait_at_gate) for _ in range(50)]
            # Every call is on its own thread, blocked on the gate (blocking the loop is fine: nothing
            # is due on it until the gate opens).
            at_gate.wait(30)
            gate.set()
            assert await asyncio.gather(*futures) == [True] * 50
        finally:
            pool.shutdown()

    asyncio.run(main())
    assert 1 <= wakeups < 50


def test_a_cancelled_future_drops_its_result_and_a_stuck_thread_is_not_reused() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop_errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: loop_errors.append(context))
        pool = ElasticThreadPool()
        release = threading.Event()
        try:
            stuck = pool.run_async(release.wait)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(stuck, 0.05)
            assert stuck.cancelled()
            # The stuck thread is still busy: the next call gets a new thread and finishes.
            assert await asyncio.wait_for(pool.run_async(lambda: "fresh"), 5) == "fresh"
            assert pool.size == 2
            release.set()
            # A thread counts itself idle only after it handed its result over (call_soon_threadsafe),
            # so once both are idle the delivery to the cancelled future is queued on the loop...
            deadline = loop.time() + 30
            while pool._idle < 2:
                assert loop.time() < deadline, "the stuck thread never finished"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0)  # ...and has run by the time this resumes
            assert loop_errors == []  # dropped, not an InvalidStateError in a loop callback
        finally:
            pool.shutdown()

    asyncio.run(main())
