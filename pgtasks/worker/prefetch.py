"""How many jobs a worker may claim ahead of its free slots: only while its jobs are short.

A worker that fetches only as many jobs as it has free slots (River's rule) spreads work evenly
and never holds a job it cannot start, but with short jobs its slots sit idle for a database
round trip after every batch: measured on 2 cores, 10 slots of no-op jobs drained ~3,500 jobs/s
that way, against ~11,800 jobs/s with 50 slots (docs/performance.md). Claiming one batch ahead
keeps the slots busy while the next fetch is in flight.

The cost of claiming ahead is that a claimed job waits locally while another worker might have
run it. So the allowance is granted only while the recent jobs are short: with at most
`concurrency` jobs waiting and every slot finishing a job in about `mean` seconds, a job waits
about `mean` seconds locally, which MAX_JOB_SECONDS bounds. Long jobs (or a fresh worker that has
not seen any yet) get no allowance, and the worker behaves exactly as before.
"""

from __future__ import annotations

# Jobs whose recent mean duration is at most this may be claimed ahead.
MAX_JOB_SECONDS = 0.05
# Weight of the newest duration in the moving mean: about the last 20 jobs count.
_ALPHA = 0.05


class FetchAhead:
    """A moving mean of job durations and the claim-ahead allowance it grants."""

    def __init__(self, concurrency: int, max_job_seconds: float = MAX_JOB_SECONDS) -> None:
        self.concurrency = concurrency
        self.max_job_seconds = max_job_seconds
        self.mean: float | None = None
        self.observed = 0

    def observe(self, seconds: float) -> None:
        """Record how long one job took (claim to outcome, as the worker saw it)."""
        self.observed += 1
        self.mean = seconds if self.mean is None else self.mean + _ALPHA * (seconds - self.mean)

    def allowance(self) -> int:
        """Jobs that may be claimed beyond the free slots: `concurrency` while jobs are short, else 0.

        Granted only after a full round of jobs has been timed, so one quick job cannot open it.
        """
        if self.mean is None or self.observed < self.concurrency or self.mean > self.max_job_seconds:
            return 0
        return self.concurrency
