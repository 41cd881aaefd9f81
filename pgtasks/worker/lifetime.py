"""When a worker process should end by itself so that a fresh one replaces it: its job budget is
spent, its memory passed a ceiling (recycling, as Celery's --max-tasks-per-child and
--max-memory-per-child), or the supervisor that would replace it is gone."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from collections.abc import Callable

# A supervised worker that recycled itself exits with this status, so that its supervisor tells
# "replace me" from "I am done" (0: stopped on request, or drained in burst mode). sysexits.h
# calls 75 EX_TEMPFAIL: a temporary condition, try again. A worker run on its own exits 0.
EXIT_RECYCLED = 75
# How often a supervised worker checks that its supervisor is still its parent.
SUPERVISOR_CHECK_INTERVAL = 1.0
# Resident memory is read at most this often (a /proc read per job would cost short jobs ~5%).
MEMORY_CHECK_INTERVAL = 0.1
_MB = 1024 * 1024


def rss_bytes() -> int:
    """This process's resident memory now (/proc/self/statm, Linux), else its peak so far
    (getrusage: macOS and the BSDs have no statm; the peak is what their ru_maxrss gives)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kilobytes elsewhere


class Lifetime:
    """A worker's recycling limits and its supervisor, asked by the fetch loop and after each job."""

    def __init__(self, *, max_jobs: int | None, max_memory_mb: int | None, supervisor_pid: int | None,
                 memory: Callable[[], int] = rss_bytes) -> None:
        self.max_jobs = max_jobs
        self.max_memory_mb = max_memory_mb
        self.supervisor_pid = supervisor_pid
        self._memory = memory
        self._memory_checked_at = -MEMORY_CHECK_INTERVAL
        self.recycled: str | None = None  # why the worker recycled itself: "max_jobs" or "max_memory"

    def jobs_left(self, claimed: int) -> int | None:
        """How many more jobs the worker may claim; None without a job budget."""
        return None if self.max_jobs is None else max(0, self.max_jobs - claimed)

    def memory_over(self) -> float | None:
        """The resident memory in MB when it is above max_memory_mb, else None (also when the last
        reading is less than MEMORY_CHECK_INTERVAL old)."""
        if self.max_memory_mb is None:
            return None
        now = time.monotonic()
        if now - self._memory_checked_at < MEMORY_CHECK_INTERVAL:
            return None
        self._memory_checked_at = now
        megabytes = self._memory() / _MB
        return megabytes if megabytes > self.max_memory_mb else None

    def supervisor_lost(self) -> bool:
        """The supervisor is no longer this process's parent: it died (SIGKILL, a crash), and this
        process was handed to init. Nobody would replace or stop it, so it stops."""
        return self.supervisor_pid is not None and os.getppid() != self.supervisor_pid

    async def watch_supervisor(self, on_lost: Callable[[], None], interval: float = SUPERVISOR_CHECK_INTERVAL) -> None:
        """Call `on_lost` once the supervisor is gone, then return; without a supervisor, return at once."""
        if self.supervisor_pid is None:
            return
        # A poll: nothing portable signals a parent's death to its child (Linux's prctl and pidfds
        # aside), and one getppid() a second costs nothing.
        while not self.supervisor_lost():  # noqa: ASYNC110
            await asyncio.sleep(interval)
        on_lost()
