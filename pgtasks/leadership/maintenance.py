"""A worker's background duties: heartbeat and election always, the leader-only services while leading."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgtasks.core.channels import leader_channel
from pgtasks.core.errors import ConfigurationError, DatabaseError
from pgtasks.core.logs import log_event
from pgtasks.core.options import to_seconds
from pgtasks.core.registry import Registry
from pgtasks.leadership.cleaner import Cleaner, Retention
from pgtasks.leadership.elector import Elector, LeaderService
from pgtasks.leadership.heartbeat import Heartbeat
from pgtasks.leadership.rescuer import Rescuer
from pgtasks.leadership.scheduler import DEFAULT_GRACE, PeriodicScheduler
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.maintenance")


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    """Intervals of the background services; every worker option of the same name lands here.

    - leader_ttl: lease length. A crashed leader is replaced within about this long; the lease
      is renewed every leader_ttl / 3 and trusted for 80% of it.
    - heartbeat_interval: how often each worker records that it is alive.
    - rescue_after: how long a worker may stay silent before its running jobs are rescued. Must
      be well above heartbeat_interval (at least 3x), or live workers would lose their jobs.
    - rescue_interval / cleaner_interval: how often the leader runs the rescuer and the cleaner.
    - retention: how long finished jobs, fire records and dead worker rows are kept.
    - periodic_grace: how late a tick may be enqueued and still count as on time; by default
      max(15 s, 1.5 x leader_ttl), so the ticks that fall in a leader failover are not "missed".
    - elect: False keeps this worker out of elections (it never runs leader-only services).
    """

    leader_ttl: float = 10.0
    heartbeat_interval: float = 5.0
    rescue_after: float = 60.0
    rescue_interval: float | None = None  # default: rescue_after / 4, at most 30 s
    cleaner_interval: float = 60.0
    retention: Retention = field(default_factory=Retention)
    periodic_grace: float | None = None
    elect: bool = True

    def __post_init__(self) -> None:
        for name in ("leader_ttl", "heartbeat_interval", "rescue_after", "cleaner_interval"):
            object.__setattr__(self, name, to_seconds(name, getattr(self, name)))
        for name in ("rescue_interval", "periodic_grace"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, to_seconds(name, getattr(self, name)))
        if self.rescue_after < 3 * self.heartbeat_interval:
            raise ConfigurationError(
                f"rescue_after={self.rescue_after!r} must be at least 3x heartbeat_interval="
                f"{self.heartbeat_interval!r}: otherwise a live worker whose heartbeat is a little late "
                "loses its running jobs to the rescuer. Raise rescue_after or lower heartbeat_interval."
            )
        if not isinstance(self.retention, Retention):
            raise ConfigurationError(f"retention={self.retention!r}: expected a pgtasks.Retention(...)")

    @property
    def effective_rescue_interval(self) -> float:
        return self.rescue_interval if self.rescue_interval is not None else min(30.0, self.rescue_after / 4)

    @property
    def effective_periodic_grace(self) -> timedelta:
        if self.periodic_grace is not None:
            return timedelta(seconds=self.periodic_grace)
        return max(DEFAULT_GRACE, timedelta(seconds=1.5 * self.leader_ttl))


class Maintenance:
    """Owned by a Worker; uses the worker's pool, so it adds no server connection to its budget.

    start(): first heartbeat (so the worker is known before it claims anything), then the
    heartbeat loop and the elector. Leadership gained starts the periodic scheduler, rescuer and
    cleaner; lost, stops them. step_down(): leave the election and resign (graceful shutdown;
    followers are notified and take over at once). stop(): step down, stop the heartbeat and
    delete this worker's row.
    """

    def __init__(
        self,
        registry: Registry[Any],
        store: Store,
        pool: AsyncConnectionPool[Any],
        *,
        worker_id: str,
        queues: Sequence[str],
        concurrency: int,
        held_jobs: Callable[[], Iterable[int]],
        config: MaintenanceConfig,
        supervisor: str | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.heartbeat = Heartbeat(pool, store, worker_id=worker_id, queues=queues, concurrency=concurrency,
                                   held_jobs=held_jobs, interval=config.heartbeat_interval, supervisor=supervisor,
                                   tasks=list(registry.tasks))
        self.elector = Elector(pool, store, worker_id, ttl=config.leader_ttl, on_change=self._on_leadership)
        self.scheduler = PeriodicScheduler(registry, store, pool, elector=self.elector,
                                           grace=config.effective_periodic_grace)
        self.rescuer = Rescuer(pool, store, rescue_after=config.rescue_after,
                               interval=config.effective_rescue_interval, elector=self.elector)
        self.cleaner = Cleaner(pool, store, retention=config.retention, interval=config.cleaner_interval,
                               elector=self.elector)
        self.leader_services: list[LeaderService] = [self.scheduler, self.rescuer, self.cleaner]
        self.channel = leader_channel(store.schema)

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader

    def on_leader_notify(self, payload: str) -> None:
        """Handler for the leader channel (wired to the worker's LISTEN connection)."""
        self.elector.on_notify(payload)

    async def start(self) -> None:
        try:
            await self.heartbeat.run_once()
        except DatabaseError as exc:  # the loop below retries with backoff and logs recovery
            log_event(logger, logging.WARNING, "heartbeat.failing", error=str(exc))
        await self.heartbeat.start()
        if self.config.elect:
            await self.elector.start()

    async def step_down(self) -> None:
        """Stop standing for election, stop the leader-only services, and resign if leading."""
        await self.elector.stop()
        await self.elector.resign()

    async def stop(self) -> None:
        await self.step_down()
        await self.heartbeat.stop()
        await self.heartbeat.remove()

    async def _on_leadership(self, leading: bool) -> None:
        if leading:
            log_event(logger, logging.INFO, "leader.services_starting", term=self.elector.term,
                      schedules=len(self.registry.schedules))
            for service in self.leader_services:
                await service.start()
        else:
            await asyncio.gather(*(service.stop() for service in self.leader_services))
