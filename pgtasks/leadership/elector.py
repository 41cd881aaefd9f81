"""Leader election over the pgtasks.leadership.elector lease row, with a trust window that ends before the lease can."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgtasks.core.channels import leader_channel
from pgtasks.core.errors import ConfigurationError, ConnectionLostError, DatabaseError
from pgtasks.core.logs import log_event
from pgtasks.core.models import LeaderLease
from pgtasks.core.service import IntervalService
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.leader")

# The leader acts only until (time the renewal was sent + TTL - this share of the TTL). The lease
# in the database runs until (time the renewal ran + TTL), which is later: so the old leader has
# stopped acting before any follower can see the lease expired. The margin absorbs clock-rate
# drift and the time between our clock read and the statement's now().
TRUST_MARGIN = 0.2
# Renew this many times per TTL: two renewals can fail in a row before the trust window closes.
RENEWALS_PER_TTL = 3


class Elector(IntervalService):
    """Holds, renews and gives up the lease for one process, and says when leadership changes.

    Every `ttl / 3` seconds it tries to elect itself (as a follower) or to renew its own term (as
    leader). `is_leader` is true only inside the trust window of the last successful renewal;
    when the window closes without a renewal (the database is unreachable, the process stalled)
    leadership is given up locally at once, so two processes never both act as leader.
    `on_change(True/False)` is awaited on every transition; leader-only services start and stop
    there.
    """

    name = "elector"

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        store: Store,
        leader_id: str,
        *,
        ttl: float,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0:
            raise ConfigurationError(f"leader_ttl={ttl!r}: expected a number of seconds > 0")
        super().__init__(ttl / RENEWALS_PER_TTL)
        self._pool = pool
        self._store = store
        self.leader_id = leader_id
        self.ttl = float(ttl)
        self.channel = leader_channel(store.schema)
        self._on_change = on_change
        self._clock = clock
        self.term: int | None = None
        self.elected_at: datetime | None = None
        self._trusted_until = 0.0
        self._acting = False
        self._transition = asyncio.Lock()
        self._lapse: asyncio.TimerHandle | None = None
        self._lapse_task: asyncio.Task[None] | None = None
        self.terms_won = 0
        self._attempted = False  # an election was sent at least once (its reply may never have come)

    @property
    def is_leader(self) -> bool:
        """True while this process may act as leader (inside the trust window of its lease)."""
        return self.term is not None and self._clock() < self._trusted_until

    @property
    def trusted_for(self) -> float:
        """Seconds left in the trust window (0 when not leading)."""
        return max(0.0, self._trusted_until - self._clock()) if self.term is not None else 0.0

    async def run_once(self, now: datetime | None = None) -> None:
        self._attempted = True
        sent = self._clock()
        held = self.term
        lease: LeaderLease | None = None
        # A round trip that hangs (a frozen network) must not stall the elector forever: give up
        # after one renewal interval and try again. Safety does not depend on this (the trust
        # window closes on its own); liveness does.
        try:
            async with asyncio.timeout(self.interval), self._pool.connection() as conn:
                if held is not None:
                    lease = await self._store.aleader_attempt_reelect(
                        conn, leader_id=self.leader_id, term=held, ttl=self.ttl, now=now)
                if lease is None:
                    lease = await self._store.aleader_attempt_elect(conn, leader_id=self.leader_id, ttl=self.ttl,
                                                                    now=now)
        except TimeoutError:
            raise ConnectionLostError(f"leader election round trip took longer than {self.interval:.2f}s") from None
        if held is not None and (lease is None or lease.term != held):
            log_event(logger, logging.WARNING, "leader.term_lost", leader_id=self.leader_id, term=held)
            self.term = None
            self._trusted_until = 0.0
            self._disarm_lapse()
            await self._set_acting(False)
        if lease is None:
            return
        if self.term != lease.term:
            self.terms_won += 1
            log_event(logger, logging.INFO, "leader.elected", leader_id=self.leader_id, term=lease.term,
                      ttl_s=self.ttl)
        self.term = lease.term
        self.elected_at = lease.elected_at
        self._trusted_until = sent + self.ttl * (1 - TRUST_MARGIN)
        self._arm_lapse()
        await self._set_acting(True)

    def on_notify(self, payload: str) -> None:
        """A leader resigned (leader channel): try to take over now rather than at the next interval."""
        if self.term is None:
            self.poke()

    async def resign(self, now: datetime | None = None) -> bool:
        """Stop acting as leader, expire our lease and notify followers; False if we held none.

        Never raises for database errors: if the resignation cannot be written, the lease simply
        expires after the TTL (we stopped acting first, so nothing runs twice meanwhile). Without
        a term of ours it still resigns any lease under our id: an election whose reply never
        arrived (cancelled by the shutdown, or lost with the connection) may have won one.
        """
        term, self.term = self.term, None
        self._trusted_until = 0.0
        self._disarm_lapse()
        await self._set_acting(False)
        if term is None and not self._attempted:
            return False  # never asked for the lease: nothing can be ours
        try:
            async with self._pool.connection() as conn:
                resigned = await self._store.aleader_resign(conn, leader_id=self.leader_id, term=term,
                                                            channel=self.channel, now=now)
        except DatabaseError as exc:
            log_event(logger, logging.WARNING, "leader.resign_failed", leader_id=self.leader_id, term=term,
                      error=str(exc), consequence=f"followers take over when the lease expires (<= {self.ttl}s)")
            return False
        if term is not None or resigned:
            log_event(logger, logging.INFO, "leader.resigned", leader_id=self.leader_id, term=term, written=resigned)
        return resigned

    # -- the trust window ----------------------------------------------------------------------

    def _arm_lapse(self) -> None:
        self._disarm_lapse()
        loop = asyncio.get_running_loop()
        self._lapse = loop.call_later(max(0.0, self._trusted_until - self._clock()), self._on_lapse)

    def _disarm_lapse(self) -> None:
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None

    def _on_lapse(self) -> None:
        self._lapse = None
        if self.term is not None and not self.is_leader:
            # The lease was not renewed in time. Keep the term: a later renewal may still
            # succeed if nobody else was elected meanwhile. Stop acting now, though.
            log_event(logger, logging.WARNING, "leader.trust_expired", leader_id=self.leader_id, term=self.term)
            self._lapse_task = asyncio.get_running_loop().create_task(self._set_acting(False))

    async def _set_acting(self, acting: bool) -> None:
        async with self._transition:
            if acting and not self.is_leader:
                acting = False  # the window closed while we waited for the lock
            if acting == self._acting:
                return
            self._acting = acting
            if not acting:
                log_event(logger, logging.INFO, "leader.stepped_down", leader_id=self.leader_id)
            if self._on_change is not None:
                await self._on_change(acting)


class LeaderService(IntervalService):
    """A service that acts only while this process leads (periodic scheduler, rescuer, cleaner).

    The worker starts it when leadership is gained and stops it when lost; the check in
    `may_act()` also covers a run already in progress when the trust window closes. With no
    elector (tests, one-off scripts) it always acts.
    """

    def __init__(self, interval: float, elector: Elector | None = None) -> None:
        super().__init__(interval)
        self.elector = elector

    def may_act(self) -> bool:
        return self.elector is None or self.elector.is_leader

    @property
    def term(self) -> int | None:
        return self.elector.term if self.elector is not None else None
