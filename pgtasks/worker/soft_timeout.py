"""A task's soft time limit: a warning some time before the hard `timeout`, that the task may act on.

At `soft_timeout` seconds into an attempt, `current_job().soft_timed_out` turns True. A sync task
runs on a thread that cannot be interrupted, so that flag is all it gets: it polls it. An async
task also gets `SoftTimeLimitExceeded` raised at the await it is suspended in.

That exception is delivered by cancellation: the timer cancels the job's asyncio task, which makes
asyncio throw CancelledError into the coroutine chain at its current await, and `SoftLimited`, the
awaitable the executor awaits instead of the task's coroutine, throws SoftTimeLimitExceeded into
the coroutine in its place and withdraws its cancel request (`Task.uncancel()`). Cancelling is the
only way into a suspended coroutine that asyncio offers, and a task of its own per job (to cancel
instead of the job's task) would cost every job of a task with a soft timeout one more task.

If another cancel request arrived with the soft one (a shutdown, an operator's cancel, the hard
timeout firing in the same loop iteration), asyncio folds them into one CancelledError; then it
goes through unchanged, so that cancel is not lost, and the task never sees the soft exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from pgtasks.core.context import JobContext
from pgtasks.core.errors import SoftTimeLimitExceeded


class SoftLimit:
    """One attempt's soft limit. `flag_after()` arms it for a sync task; `SoftLimited` for an async one."""

    def __init__(self, seconds: float, context: JobContext, *, hard: float | None,
                 on_expired: Callable[[], None]) -> None:
        self.seconds = seconds
        self.hard = hard
        self.context = context
        self.on_expired = on_expired
        self.fired = False  # the timer went off
        self.delivered = False  # the cancellation it caused has reached the task (as the soft exception or not)
        self._task: asyncio.Task[Any] | None = None

    def arm(self, task: asyncio.Task[Any] | None) -> asyncio.TimerHandle:
        """Start the timer; when it fires it sets the flag and, given the async job's task, cancels it."""
        self._task = task
        return asyncio.get_running_loop().call_later(self.seconds, self.expire)

    def expire(self) -> None:
        """What the timer does (public so a test can fire it at a moment of its choosing)."""
        if self.fired:
            return
        self.fired = True
        self.context.soft_timed_out = True
        self.on_expired()
        if self._task is not None:
            self._task.cancel()

    def exception(self) -> SoftTimeLimitExceeded:
        hard = f" (its hard timeout is {self.hard:g}s)" if self.hard is not None else ""
        return SoftTimeLimitExceeded(f"task exceeded its soft timeout of {self.seconds:g}s{hard}")


class SoftLimited:
    """Awaits `coro` as the job's task would, and turns the soft limit's cancellation into
    SoftTimeLimitExceeded inside it (see the module docstring)."""

    __slots__ = ("_coro", "_limit")

    def __init__(self, coro: Coroutine[Any, Any, Any], limit: SoftLimit) -> None:
        self._coro = coro
        self._limit = limit

    def __await__(self) -> Generator[Any, Any, Any]:
        task = asyncio.current_task()
        assert task is not None, "a soft limit needs the job's asyncio task"
        limit, coro = self._limit, self._coro
        baseline = task.cancelling()  # cancel requests older than this attempt are not ours to withdraw
        handle = limit.arm(task)
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = coro.send(value) if error is None else coro.throw(error)
                except StopIteration as stop:
                    return stop.value
                value, error = None, None
                try:
                    value = yield step  # what asyncio's Task does with `yield from`, by hand
                except GeneratorExit:
                    coro.close()
                    raise
                except asyncio.CancelledError as cancelled:
                    error = self._soft_error(task, baseline) or cancelled
                except BaseException as thrown:  # noqa: BLE001 - passed on into the coroutine, as `yield from` does
                    error = thrown
        finally:
            handle.cancel()

    def _soft_error(self, task: asyncio.Task[Any], baseline: int) -> SoftTimeLimitExceeded | None:
        limit = self._limit
        if not limit.fired or limit.delivered:
            return None
        limit.delivered = True
        if task.uncancel() > baseline:  # another cancel came with ours: it must get through
            return None
        return limit.exception()
