"""The rescuer: running jobs whose worker went silent go back to retry (or are discarded)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgtasks.core.logs import log_event
from pgtasks.core.models import RescuedJob
from pgtasks.leadership.elector import Elector, LeaderService
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.rescuer")

BATCH_SIZE = 1000


class Rescuer(LeaderService):
    """Leader-only: rescues jobs stuck in `running` because their worker is gone.

    A job is rescued when its attempt began more than `rescue_after` seconds ago and its worker
    has no heartbeat row, has not sent a heartbeat for `rescue_after` seconds, or has not listed
    the job in its heartbeats for that long. The job becomes `retryable` at once (or `discarded`
    when it has used all its attempts) with an error entry of type "Rescued". The abandoned
    attempt's own outcome, should its worker come back, is rejected by the claims fence.
    """

    name = "rescuer"

    def __init__(self, pool: AsyncConnectionPool[Any], store: Store, *, rescue_after: float, interval: float,
                 elector: Elector | None = None, batch_size: int = BATCH_SIZE) -> None:
        super().__init__(interval, elector)
        self._pool = pool
        self._store = store
        self.rescue_after = float(rescue_after)
        self.batch_size = batch_size
        self.rescued = 0

    async def run_once(self, now: datetime | None = None) -> None:
        await self.rescue(now)

    async def rescue(self, now: datetime | None = None) -> list[RescuedJob]:
        """One pass, in batches until a batch comes back short; returns the jobs rescued."""
        rescued: list[RescuedJob] = []
        while self.may_act():
            async with self._pool.connection() as conn:
                batch = await self._store.ajob_rescue_stuck(conn, rescue_after=self.rescue_after,
                                                            limit=self.batch_size, now=now)
            rescued.extend(batch)
            for job in batch:
                log_event(logger, logging.WARNING, "job.rescued", job_id=job.id, queue=job.queue, state=job.state,
                          attempt=job.attempt, worker_id=job.attempted_by, rescue_after_s=self.rescue_after)
            if len(batch) < self.batch_size:
                break
        self.rescued += len(rescued)
        return rescued
