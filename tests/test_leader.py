"""Leader election: terms that only grow, renewals scoped to the term, the trust window, resignation
with a notification, heartbeats, and the `pgtasks leader` command."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from click.testing import CliRunner

from pgtasks import App, ConfigurationError
from pgtasks.cli import main
from pgtasks.leadership.elector import TRUST_MARGIN, Elector
from pgtasks.leadership.maintenance import MaintenanceConfig
from pgtasks.storage.connections import make_async_pool
from tests.helpers import is_leader, leader_and_follower, run_with_pool, wait_for, worker_thread

T = TypeVar("T")
T0 = datetime(2024, 1, 1, 10, 0, 0, tzinfo=UTC)
# The trust window (80% of the TTL) ends 1 s before the lease does: time enough, on a loaded
# machine, to read the lease back after the step-down and still find it active.
TRUST_TEST_TTL = 5.0
# A frozen leader steps down within 0.8 x TTL; a follower is elected within TTL + TTL/3.
FROZEN_TEST_TTL = 3.0
SLACK = 4.0


async def until(condition: Callable[[], bool], timeout: float) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)


def lease_row(conn: psycopg.Connection[Any], schema: str) -> tuple[str, int, datetime, datetime, bool] | None:
    row = conn.execute(f'SELECT leader_id, term, elected_at, expires_at, expires_at > now() FROM "{schema}".leader'
                       ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3], row[4])


def test_terms_only_grow_and_renewals_are_scoped_to_the_term(app: App) -> None:
    changes: list[tuple[str, bool]] = []

    def recorder(name: str) -> Callable[[bool], Awaitable[None]]:
        async def on_change(leading: bool) -> None:
            changes.append((name, leading))
        return on_change

    async def body(pool: Any) -> None:
        a = Elector(pool, app.store, "a", ttl=10, on_change=recorder("a"))
        b = Elector(pool, app.store, "b", ttl=10, on_change=recorder("b"))
        await a.run_once(now=T0)
        await b.run_once(now=T0 + timedelta(seconds=1))
        assert (a.term, a.is_leader, b.term, b.is_leader) == (1, True, None, False)
        await a.run_once(now=T0 + timedelta(seconds=5))  # renew: same term, lease to 10:00:15
        await b.run_once(now=T0 + timedelta(seconds=12))
        assert (a.term, b.term) == (1, None)
        # `a` stalls; its lease runs out at 10:00:15 and `b` takes over with a higher term.
        await b.run_once(now=T0 + timedelta(seconds=16))
        assert (b.term, b.is_leader) == (2, True)
        # The stale leader's renewal is scoped to term 1: it changes nothing and it steps down.
        await a.run_once(now=T0 + timedelta(seconds=17))
        assert (a.term, a.is_leader) == (None, False)
        assert await b.resign(now=T0 + timedelta(seconds=17)) is True
        # Resigning keeps the row, so the term keeps growing.
        await a.run_once(now=T0 + timedelta(seconds=18))
        assert (a.term, a.is_leader) == (3, True)
        await a.resign()

    run_with_pool(app, body)
    assert changes == [("a", True), ("b", True), ("a", False), ("b", False), ("a", True), ("a", False)]


def test_the_trust_window_closes_before_the_lease_expires(app: App, conn: psycopg.Connection[Any],
                                                         schema: str) -> None:
    seen: list[bool] = []

    async def body(pool: Any) -> tuple[bool, float, bool]:
        stepped_down = asyncio.Event()

        async def on_change(leading: bool) -> None:
            seen.append(leading)
            if not leading:
                stepped_down.set()

        elector = Elector(pool, app.store, "solo", ttl=TRUST_TEST_TTL, on_change=on_change)
        started = time.monotonic()
        await elector.run_once()
        assert elector.is_leader
        # No renewal: the process "stalls". The lapse timer steps down when the window closes.
        await asyncio.wait_for(stepped_down.wait(), TRUST_TEST_TTL + SLACK)
        trusted_for = time.monotonic() - started
        assert not elector.is_leader
        lease = lease_row(conn, schema)
        assert lease is not None
        still_active_in_db = lease[4]
        # Nobody else was elected meanwhile, so a late renewal of the same term still succeeds.
        await elector.run_once()
        regained = elector.is_leader and elector.term == 1
        await elector.resign()
        return still_active_in_db, trusted_for, regained

    still_active_in_db, trusted_for, regained = run_with_pool(app, body)
    assert still_active_in_db, "the process stopped trusting its lease only after the database expired it"
    # Trusted from before the renewal was sent until 80% of the TTL later: the lapse timer fires
    # then, not earlier; late only by the loop's scheduling slack.
    assert TRUST_TEST_TTL * (1 - TRUST_MARGIN) <= trusted_for < TRUST_TEST_TTL * (1 - TRUST_MARGIN) + SLACK / 4
    assert regained
    assert seen == [True, False, True, False]


def test_maintenance_options_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="rescue_after=5"):
        MaintenanceConfig(heartbeat_interval=5, rescue_after=5)
    with pytest.raises(ConfigurationError, match="leader_ttl=0"):
        MaintenanceConfig(leader_ttl=0)
    assert MaintenanceConfig(leader_ttl=2).effective_periodic_grace == timedelta(seconds=15)
    assert MaintenanceConfig(leader_ttl=20).effective_periodic_grace == timedelta(seconds=30)
    assert MaintenanceConfig(rescue_after=8, heartbeat_interval=1).effective_rescue_interval == 2


def test_graceful_stop_resigns_and_a_follower_takes_over_at_once(app: App, conn: psycopg.Connection[Any],
                                                                  schema: str) -> None:
    """With a 30 s TTL a follower polls every 10 s; taking over within a few seconds of the
    leader's stop is only possible through the resignation's NOTIFY."""
    options: dict[str, Any] = {"leader_ttl": 30.0, "heartbeat_interval": 0.2, "rescue_after": 5.0,
                               "poll_interval": 0.2}
    with leader_and_follower(app, **options) as (first, second):
        assert second.maintenance is not None and second.listening
        workers = {r[0] for r in conn.execute(f'SELECT worker_id FROM "{schema}".workers').fetchall()}
        assert workers == {first.worker_id, second.worker_id}
        before = lease_row(conn, schema)
        assert before is not None and before[0] == first.worker_id
        stopped_at = time.monotonic()
        first.request_stop()
        wait_for(lambda: is_leader(second), timeout=8)
        took_over_after = time.monotonic() - stopped_at
        after = lease_row(conn, schema)
        assert after is not None and after[0] == second.worker_id and after[1] == before[1] + 1
        assert took_over_after < 8  # far below the 10 s a poll would take
        wait_for(lambda: conn.execute(f'SELECT count(*) FROM "{schema}".workers').fetchone() == (1,), timeout=10)
        # The leader-only services run only on the new leader.
        assert second.maintenance.scheduler.running and second.maintenance.rescuer.running
        assert first.maintenance is not None and not first.maintenance.scheduler.running
    assert conn.execute(f'SELECT count(*) FROM "{schema}".workers').fetchone() == (0,)
    final = lease_row(conn, schema)
    assert final is not None and final[4] is False  # the last leader resigned too


def test_heartbeat_lists_the_jobs_a_worker_holds(app: App, conn: psycopg.Connection[Any], schema: str) -> None:
    import threading

    release = threading.Event()

    @app.task
    def hold() -> None:
        release.wait(10)

    with worker_thread(app, heartbeat_interval=0.1, rescue_after=1.0, poll_interval=0.1) as worker:
        job = hold.delay()

        def listed() -> bool:
            row = conn.execute(f'SELECT running, pid, queues FROM "{schema}".workers WHERE worker_id = %s',
                               (worker.worker_id,)).fetchone()
            return row is not None and row[0] == [job.id]

        wait_for(listed, timeout=10)
        release.set()
        wait_for(lambda: job.state() == "completed", timeout=10)


def test_leader_command(app: App, database_url: str, schema: str) -> None:
    runner = CliRunner()
    base = ["--database-url", database_url, "--schema", schema, "leader"]
    none = runner.invoke(main, base)
    assert none.exit_code == 1 and "no leader has been elected" in none.output

    async def elect(pool: Any) -> Elector:
        elector = Elector(pool, app.store, "host:123:abc", ttl=30)
        await elector.run_once()
        return elector

    run_with_pool(app, elect)
    shown = runner.invoke(main, base)
    assert shown.exit_code == 0, shown.output
    assert "host:123:abc" in shown.output and "term:    1" in shown.output and "expires in" in shown.output
    as_json = runner.invoke(main, [*base, "--json"])
    assert '"leader_id":"host:123:abc"' in as_json.output and '"term":1' in as_json.output


def test_a_leader_cut_off_by_a_frozen_network_steps_down_before_anyone_else_is_elected(
    app: App, database_url: str,
) -> None:
    """The partition the trust window exists for: the leader's connection goes silent (no error,
    no reply). It must stop acting before a follower can be elected, its election loop must not
    hang for good, and once the network heals it rejoins as a follower."""
    from psycopg.conninfo import conninfo_to_dict

    from tests.tcp_proxy import freezable_proxy

    target = conninfo_to_dict(database_url)  # the proxy forwards to TCP or to a Unix socket directory
    events: list[tuple[str, bool, float]] = []

    def recorder(name: str) -> Callable[[bool], Awaitable[None]]:
        async def on_change(leading: bool) -> None:
            events.append((name, leading, time.monotonic()))
        return on_change

    async def body(proxy_port: int) -> None:
        cut_dsn = f"postgresql://{target.get('user', 'postgres')}@127.0.0.1:{proxy_port}/{target['dbname']}"
        cut_pool = make_async_pool(cut_dsn, application_name="cut", max_size=2, name="cut")
        pool = make_async_pool(app.dsn, application_name="test", max_size=2, name="test")
        await cut_pool.open(wait=True)
        await pool.open(wait=True)
        a = Elector(cut_pool, app.store, "a", ttl=FROZEN_TEST_TTL, on_change=recorder("a"))
        b = Elector(pool, app.store, "b", ttl=FROZEN_TEST_TTL, on_change=recorder("b"))
        takeover = FROZEN_TEST_TTL + FROZEN_TEST_TTL / 3 + SLACK
        try:
            await a.run_once()
            assert a.is_leader
            await a.start()
            await b.start()
            assert proxy.freeze() >= 1
            await until(lambda: b.is_leader, timeout=takeover)
            assert b.is_leader and b.term == 2
            assert a.running  # its loop is alive, not stuck on the silent connection
            # The network heals for new connections; when b resigns, a is elected again.
            await b.stop()
            await b.resign()
            await until(lambda: a.is_leader, timeout=takeover)
            assert a.is_leader and a.term == 3
        finally:
            await a.stop()
            await a.resign()
            await b.stop()
            await pool.close()
            await cut_pool.close()

    with freezable_proxy(str(target.get("host", "127.0.0.1")), int(str(target.get("port", 5432)))) as proxy:
        asyncio.run(body(proxy.port))
    a_down = next(t for name, leading, t in events if name == "a" and not leading)
    b_up = next(t for name, leading, t in events if name == "b" and leading)
    assert a_down < b_up, events


def test_an_election_whose_reply_was_lost_is_still_resigned(app: App, conn: psycopg.Connection[Any],
                                                            database_url: str) -> None:
    """The election committed but its reply never arrived (here: dropped after the commit; at a
    shutdown: the elector's task cancelled in the round trip). The process does not know it
    leads, yet the lease is its own: resign() must expire it, or every follower waits a TTL."""
    from pgtasks.core.errors import ConnectionLostError
    from tests.tcp_proxy import database_proxy

    def election(sql: str, tag: str) -> bool:
        return "INSERT INTO" in sql and ".leader AS l" in sql and tag == "INSERT 0 1"

    async def body(dsn: str, proxy: Any) -> tuple[Any, Any, bool, Any]:
        pool = make_async_pool(dsn, application_name="lost-election", max_size=1, name="lost-election")
        await pool.open(wait=True)
        elector = Elector(pool, app.store, "lost-reply", ttl=30)
        try:
            drop = proxy.drop_reply(election)
            with pytest.raises(ConnectionLostError):
                await elector.run_once()
            drop.wait(5)
            unknown = (elector.term, elector.is_leader, lease_row(conn, app.schema))
            resigned = await elector.resign()
            return unknown, drop.tag, resigned, lease_row(conn, app.schema)
        finally:
            await pool.close()

    with database_proxy(database_url) as (proxy, dsn):
        (term, leading, before), tag, resigned, after = asyncio.run(body(dsn, proxy))
    assert tag == "INSERT 0 1" and (term, leading) == (None, False)  # committed; the process never heard
    assert before is not None and before[0] == "lost-reply" and before[4] is True
    assert resigned is True
    assert after is not None and after[0] == "lost-reply" and after[4] is False
