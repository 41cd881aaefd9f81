"""How many jobs a worker may claim ahead of its free slots: only while its jobs are short.

A worker that fetches only as many jobs as it has free slots (River's rule) spreads work evenly
and never holds a job it cannot start, but with short jobs its slots sit idle for a database
round trip after every batch, and every job pays for a small batch's statements: on 2 cores, 10
slots of no-op jobs drained ~3,500 jobs/s that way (docs/performance.md). Claiming ahead keeps
the slots busy while the next fetch is in flight and makes the batches large.

The cost of claiming ahead is that a claimed job waits locally while another worker might have
run it. So the allowance is sized by time, not by count: with `ahead` jobs waiting and the slots
finishing a job every `mean / concurrency` seconds, the last one waits about
`ahead * mean / concurrency`, which the allowance keeps under MAX_LOCAL_WAIT. Jobs longer than
that on average (or a fresh worker that has not timed a full round yet) get no allowance, and the
worker claims exactly as many jobs as it has free slots. The worker also gives back what it holds
if no slot frees up for STALL_SECONDS (short jobs turned long): see Worker._return_if_stalled.
"""

from __future__ import annotations

# A job claimed ahead should wait about this long at most before a slot takes it.
MAX_LOCAL_WAIT = 0.05
# Upper bounds of the allowance: per slot, and in all (one outcome batch of the completer).
MAX_AHEAD_PER_SLOT = 10
MAX_AHEAD = 1000
# No slot freed for this long while jobs wait locally: give them back to the queue.
STALL_SECONDS = 0.5
# Weight of the newest duration in the moving mean: about the last 20 jobs count.
_ALPHA = 0.05


class FetchAhead:
    """A moving mean of job durations and the claim-ahead allowance it grants."""

    def __init__(self, concurrency: int, max_local_wait: float = MAX_LOCAL_WAIT, *, enabled: bool = True) -> None:
        self.concurrency = concurrency
        self.enabled = enabled
        self.max_local_wait = max_local_wait
        self.mean: float | None = None
        self.observed = 0

    def observe(self, seconds: float) -> None:
        """Record how long one job took to run, as the worker saw it."""
        self.observed += 1
        self.mean = seconds if self.mean is None else self.mean + _ALPHA * (seconds - self.mean)

    def allowance(self) -> int:
        """Jobs that may be claimed beyond the free slots (0 while jobs are long or not yet timed).

        Granted only after a full round of jobs has been timed, so one quick job cannot open it.
        """
        mean = self.mean
        if not self.enabled or mean is None or self.observed < self.concurrency or mean > self.max_local_wait:
            return 0
        by_wait = int(self.concurrency * self.max_local_wait / max(mean, 1e-6))
        return max(self.concurrency, min(by_wait, MAX_AHEAD_PER_SLOT * self.concurrency, MAX_AHEAD))

    def stalled(self, seconds: float) -> None:
        """No slot freed for `seconds` while jobs waited: count the jobs as that long, closing the allowance."""
        self.mean = max(self.mean or 0.0, seconds)
