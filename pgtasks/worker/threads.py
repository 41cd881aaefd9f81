"""An elastic thread pool for sync tasks: a thread whose job timed out is never handed new work."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
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

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("thread pool is closed")
            if self._idle == 0:
                thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1
        self._work.put((future, fn))
        return future

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            future, fn = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn()
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side unchanged
                    future.set_exception(exc)
                else:
                    future.set_result(result)
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
