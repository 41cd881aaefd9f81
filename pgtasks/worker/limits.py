"""The worker's side of flow control: declaring its code's limits, knowing which of its queues are
limited, and when a job a limit held back can next be claimed.

The limits themselves are enforced by the database (job_fetch_limited). The plain claim leaves
limited queues out, so this worker's view of which queues are limited only decides whether it
runs the limited claim: a stale view can delay a limited queue's jobs by a poll interval, never
let one run past its limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from pgtasks.core.definition import TaskDefinition
from pgtasks.core.logs import log_event
from pgtasks.core.registry import Registry
from pgtasks.storage.limits import LimitedClaim
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.worker")

# The control-channel payload `pgtasks queues limit` sends: re-read which queues are limited.
LIMITS_CHANGED = "limits"
MIN_WAKE = 0.005


class FlowControl:
    """Which of the worker's queues are limited, refreshed every poll interval and when told, and
    what the last limited claim said about the jobs it held back."""

    def __init__(self, store: Store, registry: Registry[Any], queues: Sequence[str], poll_interval: float) -> None:
        self.store = store
        self.registry = registry
        self.queues = list(queues)
        self.poll_interval = poll_interval
        self.limited: list[str] = []
        self._refreshed_at = float("-inf")
        self.held = False  # the last limited claim left a ready job behind
        self.wake_at: float | None = None  # monotonic time a rate limit that held one has a token again
        self.limited_claims = 0

    async def declare(self, conn: AsyncConnection[Any]) -> None:
        """Write the limits the code declares (app.queue(), @app.task(concurrency=, rate_limit=))."""
        tasks: dict[str, tuple[str, Any]] = {}
        for task in self.registry.tasks.values():
            definition: TaskDefinition[Any, Any] = task
            tasks[definition.name] = (definition.config.queue, definition.config.limits)
        declared = await self.store.alimits_declare(conn, self.registry.queue_limits, tasks)
        if declared.queues or declared.tasks or declared.forgotten:
            log_event(logger, logging.INFO, "worker.limits_declared", queues=",".join(declared.queues) or None,
                      tasks=",".join(declared.tasks) or None, removed=",".join(declared.forgotten) or None)

    def refresh_due(self) -> bool:
        return time.monotonic() >= self._refreshed_at + self.poll_interval

    def changed(self) -> None:
        """Told on the control channel that a limit changed: re-read before the next claim."""
        self._refreshed_at = float("-inf")

    async def refresh(self, conn: AsyncConnection[Any]) -> None:
        limited = await self.store.alimited_queues(conn, self.queues)
        if limited != self.limited:
            log_event(logger, logging.INFO, "worker.limited_queues", queues=",".join(limited) or None)
        self.limited = limited
        self._refreshed_at = time.monotonic()

    def record(self, claim: LimitedClaim) -> None:
        self.limited_claims += 1
        self.held = claim.held
        # At least MIN_WAKE away: a token due "now" is claimed on the next turn, not in a spin.
        self.wake_at = time.monotonic() + max(claim.wake_in, MIN_WAKE) if claim.wake_in is not None else None

    def seconds_until_wake(self) -> float | None:
        if self.wake_at is None:
            return None
        return max(0.0, self.wake_at - time.monotonic())
