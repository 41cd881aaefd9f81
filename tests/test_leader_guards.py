"""Leader-only guards with the failure caused while the work is in flight: the lease is lost while
the scheduler, the rescuer and the cleaner are each blocked in the middle of a statement; a tick's
key is held by another open transaction; overlap=False with two schedulers that both lead."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgtasks import App, ConnectionLostError, DatabaseError
from pgtasks.core.models import FireResult
from pgtasks.leadership.cleaner import Cleaner
from pgtasks.leadership.maintenance import Maintenance, MaintenanceConfig
from pgtasks.leadership.rescuer import Rescuer
from pgtasks.leadership.scheduler import Fire, PeriodicScheduler
from pgtasks.storage.connections import make_async_pool
from pgtasks.storage.store import Store

# Renewed every 2 s and trusted for 4.8 s: a loaded 2-core machine does not miss a renewal by
# accident, so leadership is lost only where a test takes it away. Every bound derives from it.
LEADER_TTL = 6.0
SLACK = 5.0
# The scheduler's transaction-local lock_timeout, as docs/design.md states it.
LOCK_TIMEOUT = 5.0
T0 = datetime(2024, 1, 1, 10, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

# How each leader-only service's blocked statement shows in pg_stat_activity.query.
STATEMENT_OF = {"periodic": "INSERT INTO", "rescuer": "WITH stuck AS", "cleaner": "DELETE FROM"}

AsyncConn = psycopg.AsyncConnection[Any]


# -- helpers ----------------------------------------------------------------------------------------


async def poll_until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    """Await `condition()` (a bool, or an awaitable of one) until true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = condition()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:.1f}s")


@asynccontextmanager
async def own_pool(app: App, application_name: str, size: int) -> AsyncIterator[Any]:
    """A pgtasks pool whose backends carry `application_name` (unique to the test) in pg_stat_activity."""
    pool = make_async_pool(app.dsn, application_name=application_name, max_size=size, name=application_name)
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def connection(app: App, *, autocommit: bool) -> AsyncIterator[AsyncConn]:
    conn = await psycopg.AsyncConnection.connect(app.dsn, autocommit=autocommit)
    try:
        yield conn
    finally:
        await conn.close()


async def lock_waits(observer: AsyncConn, application_name: str) -> list[str]:
    """The statements of `application_name`'s backends that wait for a lock right now."""
    cur = await observer.execute("SELECT query FROM pg_stat_activity WHERE application_name = %s "
                                 "AND wait_event_type = 'Lock'", (application_name,))
    return [str(row[0]) for row in await cur.fetchall()]


async def no_jobs_statement_running(observer: AsyncConn, application_name: str) -> bool:
    """No backend of `application_name` runs (or waits in) a statement of a leader-only service."""
    cur = await observer.execute("SELECT query FROM pg_stat_activity WHERE application_name = %s "
                                 "AND state = 'active'", (application_name,))
    return not blocked_services([str(row[0]) for row in await cur.fetchall()])


def blocked_services(statements: list[str]) -> set[str]:
    return {service for service, head in STATEMENT_OF.items() for q in statements if head in q and "jobs" in q}


@contextmanager
def leader_events() -> Iterator[list[str]]:
    """The events pgtasks.leadership.elector logs meanwhile (its own handler: propagation may be off)."""
    events: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append(str(getattr(record, "event", record.getMessage())))

    log = logging.getLogger("pgtasks.leader")
    handler, level = Recorder(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield events
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


# -- losing the lease in the middle of a pass -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingWork:
    """One thing for each leader-only service to do on its next pass."""

    cursor: datetime  # the daily schedule's registered record; its next tick is due
    tick: datetime
    stuck_job: int  # running, claimed an hour ago by a worker with no heartbeat row
    old_job: int  # completed two days ago: past the 24 h retention


def pending_work(app: App, conn: psycopg.Connection[Any]) -> PendingWork:
    @app.periodic(every=timedelta(days=1), name="daily", catch_up="latest")
    @app.task(name="guards.daily")
    def daily() -> None: ...

    tick = app.schedules["daily"].at_or_before(datetime.now(UTC))
    cursor = tick - timedelta(seconds=1)
    schema = app.schema
    conn.execute(f"INSERT INTO \"{schema}\".periodic_fires (schedule, fire_time, outcome) "
                 "VALUES ('daily', %s, 'registered')", (cursor,))
    stuck = conn.execute(
        f"INSERT INTO \"{schema}\".jobs (task, queue, state, attempt, claims, attempted_at, attempted_by) "
        "VALUES ('guards.stuck', 'default', 'running', 1, 1, now() - interval '1 hour', 'gone-worker') "
        "RETURNING id").fetchone()
    old = conn.execute(
        f"INSERT INTO \"{schema}\".jobs (task, queue, state, finalized_at) "
        "VALUES ('guards.old', 'default', 'completed', now() - interval '2 days') RETURNING id").fetchone()
    assert stuck is not None and old is not None
    return PendingWork(cursor, tick, int(stuck[0]), int(old[0]))


def untouched(app: App, conn: psycopg.Connection[Any], work: PendingWork) -> dict[str, Any]:
    """What the three services would change, read back from the database."""
    schema = app.schema
    fires = conn.execute(f'SELECT fire_time, outcome FROM "{schema}".periodic_fires ORDER BY 1').fetchall()
    daily_jobs = conn.execute(f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'guards.daily'").fetchone()
    stuck = conn.execute(f'SELECT state::text, errors FROM "{schema}".jobs WHERE id = %s',
                         (work.stuck_job,)).fetchone()
    old = conn.execute(f'SELECT count(*) FROM "{schema}".jobs WHERE id = %s', (work.old_job,)).fetchone()
    return {"fires": fires, "daily_jobs": daily_jobs, "stuck": stuck, "old_rows": old}


async def replace_the_leader(lease_conn: AsyncConn, schema: str) -> None:
    """Hand the lease to a rival, as its election would leave the row (term + 1, an hour long).
    One statement, so the old leader's renewal cannot slip in between an expiry and an election."""
    await lease_conn.execute(f"UPDATE \"{schema}\".leader SET leader_id = 'rival', term = term + 1, "
                             "elected_at = clock_timestamp(), expires_at = clock_timestamp() + interval '1 hour'")


@pytest.mark.parametrize("loss", ["replaced", "renewals_stall"])
def test_leader_only_services_stop_acting_when_the_lease_is_lost_mid_pass(
    app: App, conn: psycopg.Connection[Any], loss: str,
) -> None:
    """A test transaction holds the jobs table (LOCK TABLE ... EXCLUSIVE): the leader's scheduler
    (after recording its tick), rescuer and cleaner each block in the middle of a statement. Then
    the lease goes, for real: `replaced` hands it to a rival, so the next renewal finds its term
    gone; `renewals_stall` holds the lease row, so no renewal gets through and the trust window
    closes. The services must stop, their statements must be cancelled on the server, and once the
    table is free nothing they started may land: no tick enqueued, no job rescued, none deleted."""
    work = pending_work(app, conn)
    before = untouched(app, conn, work)
    name = f"guards-{uuid.uuid4().hex[:8]}"
    config = MaintenanceConfig(leader_ttl=LEADER_TTL, heartbeat_interval=1.0, rescue_after=60.0)

    async def body() -> list[str]:
        async with own_pool(app, name, 6) as pool, connection(app, autocommit=False) as table_holder, \
                connection(app, autocommit=False) as lease_holder, connection(app, autocommit=True) as observer:
            await table_holder.execute(f'LOCK TABLE "{app.schema}".jobs IN EXCLUSIVE MODE')
            maintenance = Maintenance(app.registry, app.store, pool, worker_id=f"{name}-worker", queues=["default"],
                                      concurrency=1, held_jobs=list, config=config)
            with leader_events() as events:
                await maintenance.start()
                try:
                    seen: set[str] = set()

                    async def all_three_blocked() -> bool:
                        seen.update(blocked_services(await lock_waits(observer, name)))
                        return seen == set(STATEMENT_OF)

                    await poll_until(all_three_blocked, SLACK + LOCK_TIMEOUT, f"passes blocked (saw {seen})")
                    assert maintenance.is_leader
                    if loss == "replaced":
                        await replace_the_leader(observer, app.schema)
                    else:
                        await lease_holder.execute(f'SELECT term FROM "{app.schema}".leader FOR UPDATE')
                    services = maintenance.leader_services
                    await poll_until(lambda: not maintenance.is_leader and not any(s.running for s in services),
                                     LEADER_TTL + SLACK, "the old leader stepped down and stopped its services")
                    # `running` turns false as stop() begins; the cancels reach the server just after.
                    # A statement left behind (cancel lost, connection dropped) would wait here for
                    # good, and run once the table is free.
                    await poll_until(lambda: no_jobs_statement_running(observer, name), SLACK,
                                     "the blocked statements were cancelled on the server")
                    if loss == "renewals_stall":
                        await replace_the_leader(lease_holder, app.schema)  # make the loss stick
                        await lease_holder.commit()
                    await poll_until(lambda: maintenance.elector.term is None, LEADER_TTL + SLACK,
                                     "the old leader saw its term gone")
                    await table_holder.rollback()  # the table is free: a statement still in flight would land now
                finally:
                    await maintenance.stop()
            return events

    events = asyncio.run(body())
    expected_event = "leader.term_lost" if loss == "replaced" else "leader.trust_expired"
    assert expected_event in events and "leader.stepped_down" in events, events
    assert untouched(app, conn, work) == before
    assert before["fires"] == [(work.cursor, "registered")] and before["stuck"] == ("running", [])

    # The work was there to do: the same services, acting (no elector), do each of them now.
    async def act(pool: Any) -> tuple[list[Fire], list[int], dict[str, int]]:
        fires = await PeriodicScheduler(app.registry, app.store, pool).tick()
        rescued = await Rescuer(pool, app.store, rescue_after=60.0, interval=15.0).rescue()
        cleaned = await Cleaner(pool, app.store).clean()
        return fires, [r.id for r in rescued], cleaned.jobs

    async def act_on_own_pool() -> tuple[list[Fire], list[int], dict[str, int]]:
        async with own_pool(app, name, 2) as pool:
            return await act(pool)

    fires, rescued, cleaned = asyncio.run(act_on_own_pool())
    assert [(f.outcome, f.fire_time) for f in fires] == [("enqueued", work.tick)]
    assert rescued == [work.stuck_job]
    assert cleaned == {"completed": 1, "cancelled": 0, "discarded": 0}


# -- a tick whose key another open transaction holds ------------------------------------------------


async def hold_tick(holder: AsyncConn, schema: str, fire_time: datetime) -> None:
    """Insert the tick's fire record, as another scheduler in the middle of its transaction would."""
    await holder.execute(f"INSERT INTO \"{schema}\".periodic_fires (schedule, fire_time, outcome) "
                         "VALUES ('minutely', %s, 'enqueued')", (fire_time,))


async def pass_blocked_on_the_key(scheduler: PeriodicScheduler, now: datetime, observer: AsyncConn,
                                  application_name: str) -> asyncio.Task[list[Fire]]:
    """Start one scheduler pass at `now` and return once it waits for the held key."""
    task = asyncio.create_task(scheduler.tick(now=now))

    async def waiting() -> bool:
        return any("periodic_fires" in q for q in await lock_waits(observer, application_name))

    await poll_until(waiting, SLACK, "the scheduler waits for the held tick's key")
    return task


def fire_rows(conn: psycopg.Connection[Any], schema: str) -> list[tuple[datetime, str, bool]]:
    """(fire_time, outcome, has a job) of every fire record of the minutely schedule."""
    rows = conn.execute(f"SELECT fire_time, outcome, job_id IS NOT NULL FROM \"{schema}\".periodic_fires "
                        "WHERE schedule = 'minutely' ORDER BY fire_time").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_a_tick_held_by_another_open_transaction_is_enqueued_once_and_waits_at_most_the_lock_timeout(
    app: App, conn: psycopg.Connection[Any],
) -> None:
    """docs/design.md: a second scheduler inserting a tick concurrently "waits on the first one's
    uncommitted key and then gets nothing back", and its wait is bounded (lock_timeout 5 s). Three
    holders of the key: one commits (the scheduler never enqueues that tick), one rolls back (the
    scheduler enqueues it, once), one stays open (the pass fails after the lock timeout, and the
    next pass, once the key is free, enqueues the tick once)."""

    @app.periodic(cron="* * * * *", name="minutely")
    @app.task(name="guards.minutely")
    def minutely() -> None: ...

    name = f"guards-{uuid.uuid4().hex[:8]}"
    schema = app.schema

    async def body() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with own_pool(app, name, 2) as pool, connection(app, autocommit=True) as observer:
            scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10))
            assert [f.outcome for f in await scheduler.tick(now=T0 + timedelta(seconds=30))] == ["registered"]
            for minute, end in ((1, "commit"), (2, "rollback")):
                async with connection(app, autocommit=False) as holder:
                    await hold_tick(holder, schema, T0 + minute * MINUTE)
                    task = await pass_blocked_on_the_key(scheduler, T0 + minute * MINUTE + timedelta(seconds=1),
                                                         observer, name)
                    await (holder.commit() if end == "commit" else holder.rollback())
                    seen[end] = [(f.outcome, f.fire_time) for f in await task]
            async with connection(app, autocommit=False) as holder:
                await hold_tick(holder, schema, T0 + 3 * MINUTE)
                started = time.monotonic()
                task = await pass_blocked_on_the_key(scheduler, T0 + 3 * MINUTE + timedelta(seconds=1), observer,
                                                     name)
                with pytest.raises(DatabaseError) as failed:
                    await task
                seen["waited"] = time.monotonic() - started
                seen["error"] = (type(failed.value), type(failed.value.__cause__),
                                 str(failed.value).splitlines()[0])
                await holder.rollback()
            retried = await scheduler.tick(now=T0 + 3 * MINUTE + timedelta(seconds=2))
            seen["retried"] = [(f.outcome, f.fire_time) for f in retried]
            seen["again"] = await scheduler.tick(now=T0 + 3 * MINUTE + timedelta(seconds=3))
        return seen

    seen = asyncio.run(body())
    assert seen["commit"] == []  # the holder's record won; the scheduler inserted no job for it
    assert seen["rollback"] == [("enqueued", T0 + 2 * MINUTE)]
    # A failed statement on a healthy connection: a DatabaseError, not a "lost connection".
    assert seen["error"] == (DatabaseError, psycopg.errors.LockNotAvailable,
                             "database error: canceling statement due to lock timeout")
    assert LOCK_TIMEOUT <= seen["waited"] <= LOCK_TIMEOUT + SLACK, seen["waited"]
    assert seen["retried"] == [("enqueued", T0 + 3 * MINUTE)] and seen["again"] == []
    assert fire_rows(conn, schema) == [
        (T0 + timedelta(seconds=30), "registered", False),
        (T0 + MINUTE, "enqueued", False),  # the committed holder's record: no job behind it
        (T0 + 2 * MINUTE, "enqueued", True),
        (T0 + 3 * MINUTE, "enqueued", True),
    ]
    jobs = conn.execute(f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'guards.minutely'").fetchone()
    assert jobs == (2,)


# -- a scheduler that stalls in the middle of its fire transaction ----------------------------------

IDLE_TIMEOUT = 5.0  # the fire transaction's idle_in_transaction_session_timeout, per docs/design.md


class StallingStore(Store):
    """Freezes the fire transaction after its fire record and before the job insert, as a paused
    process or a frozen network would: the server sees the session idle in the transaction."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        self.stalled = asyncio.Event()
        self.stalled_at = 0.0
        self.resume = asyncio.Event()

    async def aperiodic_fire(self, conn: AsyncConn, **kwargs: Any) -> FireResult:
        return await super().aperiodic_fire(_StallsBeforeTheJobInsert(conn, self), **kwargs)  # type: ignore[arg-type]


class _StallsBeforeTheJobInsert:
    """A real AsyncConnection whose job insert first waits for the test to resume it."""

    def __init__(self, conn: AsyncConn, store: StallingStore) -> None:
        self._conn = conn
        self._store = store
        self._inserts = {store.queries["job_insert"], store.queries["job_insert_now"]}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        if query in self._inserts:
            self._store.stalled_at = time.monotonic()
            self._store.stalled.set()
            await self._store.resume.wait()
        return await self._conn.execute(query, params, **kwargs)


async def tick_until_recorded(scheduler: PeriodicScheduler, now: datetime, timeout: float) -> tuple[list[Fire], int]:
    """Pass after pass (as the service loop retries), until one gets through; returns it and the
    number of passes that failed (lock timeouts)."""
    failed = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await scheduler.tick(now=now), failed
        except DatabaseError:
            failed += 1
            if time.monotonic() > deadline:
                raise


def test_a_scheduler_stalled_mid_transaction_loses_the_tick_to_the_next_one_which_enqueues_it_once(
    app: App, conn: psycopg.Connection[Any],
) -> None:
    """docs/design.md: "the server ends its session after 5 s idle in the transaction, and the new
    leader's wait is bounded too". The old scheduler stalls holding a tick's key; the new one waits
    on it, and gets the tick once the server has ended the stalled session; the stalled one, when
    it resumes, finds its transaction gone and enqueues nothing."""

    @app.periodic(cron="* * * * *", name="minutely")
    @app.task(name="guards.minutely")
    def minutely() -> None: ...

    name = f"guards-{uuid.uuid4().hex[:8]}"
    tick = T0 + MINUTE

    async def body() -> dict[str, Any]:
        async with own_pool(app, f"{name}-old", 1) as old_pool, own_pool(app, f"{name}-new", 1) as new_pool:
            old = PeriodicScheduler(app.registry, app.store, old_pool)
            new = PeriodicScheduler(app.registry, app.store, new_pool)
            stalling = old._store = StallingStore(app.schema)
            await new.tick(now=T0 + timedelta(seconds=30))  # registers the schedule
            stalled = asyncio.create_task(old.tick(now=tick + timedelta(seconds=1)))
            await asyncio.wait_for(stalling.stalled.wait(), SLACK)
            fires, failed = await tick_until_recorded(new, tick + timedelta(seconds=1),
                                                      IDLE_TIMEOUT + LOCK_TIMEOUT + SLACK)
            waited = time.monotonic() - stalling.stalled_at
            stalling.resume.set()
            with pytest.raises(ConnectionLostError) as resumed:
                await stalled
        return {"fires": [(f.outcome, f.fire_time) for f in fires], "failed": failed, "waited": waited,
                "resumed": str(resumed.value)}

    seen = asyncio.run(body())
    assert seen["fires"] == [("enqueued", tick)]
    assert IDLE_TIMEOUT - 0.5 <= seen["waited"] <= IDLE_TIMEOUT + LOCK_TIMEOUT + SLACK, seen
    assert seen["failed"] in (0, 1), seen  # at most one lock timeout, racing the idle timeout
    assert "idle-in-transaction timeout" in seen["resumed"], seen["resumed"]
    records = conn.execute(f"SELECT outcome, job_id FROM \"{app.schema}\".periodic_fires WHERE schedule = 'minutely' "
                           "ORDER BY fire_time").fetchall()
    job_ids = [int(r[0]) for r in conn.execute(
        f"SELECT id FROM \"{app.schema}\".jobs WHERE task = 'guards.minutely'").fetchall()]
    assert [r[0] for r in records] == ["registered", "enqueued"] and [records[1][1]] == job_ids


# -- overlap=False under two leaders ---------------------------------------------------------------

UNFINISHED = "('available', 'scheduled', 'retryable', 'running')"


@pytest.mark.parametrize(("skew", "expected"), [
    # Both schedulers pass at the same moments, so they race for the same tick every time.
    (timedelta(0), ["registered", "enqueued", "skipped", "skipped", "enqueued", "skipped", "skipped"]),
    # The second one's clock runs a tick ahead: it races the first on tick 1, then leads alone.
    (MINUTE, ["registered", "enqueued", "skipped", "skipped", "skipped", "enqueued", "skipped", "skipped"]),
])
def test_overlap_false_holds_with_two_schedulers_that_both_lead(
    app: App, conn: psycopg.Connection[Any], skew: timedelta, expected: list[str],
) -> None:
    """Two schedulers with no elector (as two processes that both believe they lead), each on its
    own connection, pass over the same overlap=False schedule while its run never finishes; the run
    completes before pass 4. At no moment is more than one run of the schedule unfinished, and a new
    run is enqueued exactly once after the old one completed."""

    @app.periodic(cron="* * * * *", name="exclusive", overlap=False)
    @app.task(name="guards.exclusive")
    def exclusive() -> None: ...

    schema = app.schema
    name = f"guards-{uuid.uuid4().hex[:8]}"

    def unfinished() -> list[int]:
        rows = conn.execute(f"SELECT id FROM \"{schema}\".jobs WHERE task = 'guards.exclusive' "
                            f"AND state IN {UNFINISHED} ORDER BY id").fetchall()
        return [int(r[0]) for r in rows]

    async def body() -> list[list[int]]:
        async with own_pool(app, f"{name}-a", 1) as pool_a, own_pool(app, f"{name}-b", 1) as pool_b:
            first = PeriodicScheduler(app.registry, app.store, pool_a, grace=timedelta(minutes=5))
            second = PeriodicScheduler(app.registry, app.store, pool_b, grace=timedelta(minutes=5))
            await first.tick(now=T0 + timedelta(seconds=30))
            after_each_pass = []
            for i in range(1, 7):
                if i == 4:
                    conn.execute(f"UPDATE \"{schema}\".jobs SET state = 'completed', finalized_at = now() "
                                 "WHERE task = 'guards.exclusive'")
                now = T0 + i * MINUTE + timedelta(seconds=1)
                await asyncio.gather(first.tick(now=now), second.tick(now=now + skew))
                after_each_pass.append(unfinished())
        return after_each_pass

    after_each_pass = asyncio.run(body())
    records = conn.execute(f"SELECT outcome, job_id FROM \"{schema}\".periodic_fires WHERE schedule = 'exclusive' "
                           "ORDER BY fire_time").fetchall()
    assert [r[0] for r in records] == expected
    enqueued = [int(r[1]) for r in records if r[0] == "enqueued"]
    assert len(enqueued) == 2
    assert after_each_pass == [[enqueued[0]]] * 3 + [[enqueued[1]]] * 3  # one unfinished run at every moment
    total = conn.execute(f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'guards.exclusive'").fetchone()
    assert total == (2,)
