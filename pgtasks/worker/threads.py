"""An elastic thread pool for sync tasks: a thread whose job timed out is never handed new work."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

_STOP = object()


class ElasticThreadPool:
    """Runs callables on daemon threads, starting a new thread whenever none is idle.

    concurrent.futures.ThreadPoolExecutor has a fixed size: a sync task stuck past its timeout
    would keep one of its threads forever and silently shrink the worker's real concurrency. Here
    the worker bounds concurrency itself (by slots), and a stuck thread just stays busy while a
    fresh one takes the next job. Threads are daemons so a stuck task cannot block process exit.
    """

    def __init__(self, name: str = "pgtasks-sync") -> None:
        self._name = name
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._deliveries: dict[asyncio.AbstractEventLoop, _Delivery] = {}

    def run_async(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `fn` on a pool thread; the result arrives on the running event loop's future.

        Cheaper than a ThreadPoolExecutor and asyncio.wrap_future(): no concurrent.futures.Future
        (a lock and a condition per call), and results that finish together wake the loop once (see _Delivery).
        Cancelling the returned future does not stop `fn`; its result is then dropped.
        """
        loop = asyncio.get_running_loop()
        delivery = self._deliveries.get(loop)
        if delivery is None:
            delivery = self._deliveries[loop] = _Delivery(loop)
        future: asyncio.Future[Any] = loop.create_future()
        self._start(_LoopTarget(delivery, future), fn)
        return future

    def _start(self, target: _LoopTarget, fn: Callable[[], Any]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("thread pool is closed")
            if self._idle == 0:
                thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1
        self._work.put((target, fn))

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            target, fn = item
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side unchanged
                target.delivery.put(target.future, None, exc)
            else:
                target.delivery.put(target.future, result, None)
            with self._lock:
                self._idle += 1

    @property
    def size(self) -> int:
        """Threads started so far (idle, busy, or stuck past a timeout)."""
        return len(self._threads)

    def shutdown(self) -> None:
        """Ask idle threads to exit; busy ones exit after their current call."""
        with self._lock:
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._work.put(_STOP)


class _LoopTarget:
    __slots__ = ("delivery", "future")

    def __init__(self, delivery: _Delivery, future: asyncio.Future[Any]) -> None:
        self.delivery = delivery
        self.future = future


class _Delivery:
    """Hands results from pool threads to one event loop: one wakeup per burst, not one per result.

    A thread appends its result; only the first append since the loop last emptied the list
    schedules a wakeup (call_soon_threadsafe, a write to the loop's self-pipe).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = deque()
        self._scheduled = False

    def put(self, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        with self._lock:
            self._items.append((future, result, exc))
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits the result any more
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, deque()
            self._scheduled = False
        for future, result, exc in items:
            if future.cancelled():
                continue
            if exc is None:
                future.set_result(result)
            elif isinstance(exc, StopIteration):  # a future refuses StopIteration itself
                error = RuntimeError(f"the task raised StopIteration: {exc!r}")
                error.__cause__ = exc
                future.set_exception(error)
            else:
                future.set_exception(exc)
