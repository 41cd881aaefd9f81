"""Through real PgBouncer pools: the key tests run three times (direct, session pool, transaction pool),
plus pool-mode detection, wakeups, listener health, pool exhaustion and pooler restarts."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import pgtasks
from pgtasks import App, ConfigurationError, ConnectionLostError, StatementPoolingError
from pgtasks.storage.connections import make_async_pool, make_pool, went_stale
from pgtasks.storage.poolmode import PoolMode, detect_pool_mode
from pgtasks.worker.listening import ListenPlan, plan_listening
from tests.conftest import ROOT
from tests.helpers import drain, is_leader, jobs, leader_and_follower, wait_for, worker_thread
from tests.pgbouncer_fixtures import PgBouncerLab, Target
from tests.tcp_proxy import freezable_proxy

pytestmark = pytest.mark.pgbouncer

# A functional bound, not a benchmark: a NOTIFY wakeup takes milliseconds, a poll would take 30 s
# (each test that measures wakeups polls every POLL_S). 5 s leaves a loaded 2-core machine room and
# is still six times shorter than the poll, so a job started within it was woken, not polled.
POLL_S = 30.0
WAKEUP_BOUND_S = 5.0


def problems(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("pgtasks") and r.levelno >= level]


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    value: dict[str, Any] = record.__dict__["fields"]
    return value


def states(conn: psycopg.Connection[Any], schema: str) -> collections.Counter[str]:
    return collections.Counter(row["state"] for row in jobs(conn, schema))


# -- detection ---------------------------------------------------------------------------------------


def test_detection_returns_the_mode_of_each_target(target: Target, app: App) -> None:
    for _ in range(3):  # the heuristic must not depend on luck
        detection = detect_pool_mode(target.dsn, app.store)
        assert detection.mode is target.mode, detection
        assert detection.pooler is (target.mode is not PoolMode.DIRECT)
        # LISTEN is only tried where it can work, and there it must work.
        assert detection.listen_ok is (None if target.mode is PoolMode.TRANSACTION else True)


def test_detection_gives_unknown_and_no_listen_when_it_cannot_tell(pgbouncer: PgBouncerLab, app: App) -> None:
    # Refused connection.
    refused = detect_pool_mode("postgresql://postgres@127.0.0.1:1/test", app.store)
    assert refused.mode is PoolMode.UNKNOWN and refused.listen_ok is False
    assert "cannot connect" in refused.detail
    # A pool with one server connection that someone holds: detection would wait; it times out.
    # PgBouncer would make detection wait a minute (query_wait_timeout); its own 1 s timeout ends it.
    tiny = pgbouncer.start("detect-tiny", "session", pool_size=1, query_wait_timeout=60)
    with psycopg.connect(tiny.dsn, autocommit=True) as hog:
        hog.execute("SELECT 1")  # session pooling: this client now owns the only server connection
        started = time.monotonic()
        stuck = detect_pool_mode(tiny.dsn, app.store, timeout=1.0)
        assert time.monotonic() - started < 1.0 + 10.0  # its timeout plus slack, far below the 60 s
    assert stuck.mode is PoolMode.UNKNOWN and stuck.listen_ok is False
    assert "no answer within 1s" in stuck.detail


def test_statement_pooling_is_detected_and_the_worker_polls(
    pgbouncer: PgBouncerLab, app: App, conn: psycopg.Connection[Any]
) -> None:
    bouncer = pgbouncer.start("statement", "statement")
    detection = detect_pool_mode(bouncer.dsn, app.store)
    assert detection.mode is PoolMode.STATEMENT and detection.listen_ok is False, detection
    pooled = App(bouncer.dsn, schema=app.schema)

    @pooled.task(name="record")
    def record(x: int) -> int:
        return x

    record.delay_many([(1,), (2,)])  # one statement: fine in statement mode
    worker = drain(pooled)
    assert not worker.listening and worker.claimed == 2
    assert states(conn, app.schema) == {"completed": 2}
    with pytest.raises(ConfigurationError, match="statement-mode pooler"):
        asyncio.run(pooled.worker(listen=True, burst=True).arun())
    # A transaction block cannot work there: a clear error, not the pooler's raw one.
    with pytest.raises(StatementPoolingError, match=r"statement pooling(.|\n)*session or transaction"), \
            pooled.transaction():
        record.delay(3)

    async def in_async_transaction() -> None:
        async with pooled.atransaction():
            await record.adelay(4)

    with pytest.raises(StatementPoolingError, match="statement pooling"):
        asyncio.run(in_async_transaction())
    record.delay(5)  # the pool is still usable for what statement mode allows
    assert states(conn, app.schema) == {"completed": 2, "available": 1}
    pooled.close()


# -- enqueue and drain through each target -----------------------------------------------------------


def test_enqueue_and_drain_1000_jobs_with_a_clean_log(
    target: Target, target_app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")

    @target_app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    add.delay_many([(i, i) for i in range(900)])          # bulk: one statement
    for i in range(50):
        add.delay(i, 1)                                     # standalone .delay()
    with target_app.transaction():                          # transactional
        for i in range(50):
            add.delay(i, 2)
    worker = drain(target_app, concurrency=10, pool_size=4)

    assert worker.claimed == 1000
    rows = jobs(conn, target_app.schema)
    assert len(rows) == 1000
    assert {r["state"] for r in rows} == {"completed"}
    assert {r["attempt"] for r in rows} == {1}
    assert sum(r["result"] for r in rows) == sum(2 * i for i in range(900)) + sum(2 * i + 3 for i in range(50))
    assert problems(caplog) == []
    # The worker said what it does and what it costs.
    [budget] = events(caplog, "worker.connections")
    listens = target.mode is not PoolMode.TRANSACTION
    assert fields(budget)["database_mode"] == target.mode.value
    assert fields(budget)["pool"] == 4
    assert fields(budget)["listener_mode"] == (target.mode.value if listens else "none")
    assert fields(budget)["server_connections_max"] == 4 + int(listens)
    assert worker.listening is listens
    assert len(events(caplog, "worker.poll_only")) == int(not listens)


def test_transactional_enqueue_commits_or_rolls_back_with_the_caller(
    target: Target, target_app: App, conn: psycopg.Connection[Any]
) -> None:
    @target_app.task(name="record")
    def record(x: int) -> None: ...

    with pytest.raises(RuntimeError, match="undo"), target_app.transaction():
        record.delay(1)
        record.delay_many([(2,), (3,)])
        raise RuntimeError("undo")
    # A caller-owned connection through the same target, bound for the block.
    with psycopg.connect(target.dsn, autocommit=True, prepare_threshold=None) as own:
        with own.transaction() as tx, target_app.bind(own):
            record.delay(4)
            raise psycopg.Rollback(tx)
        with own.transaction(), target_app.bind(own):
            record.delay(5)
            record.apply_async(args=(6,), connection=own)

    async def async_side() -> None:
        with pytest.raises(RuntimeError, match="undo"):
            async with target_app.atransaction():
                await record.adelay(7)
                raise RuntimeError("undo")
        async with target_app.atransaction():
            await record.adelay(8)
        await target_app.aclose()

    asyncio.run(async_side())
    assert sorted(r["args"]["x"] for r in jobs(conn, target_app.schema)) == [5, 6, 8]


def test_retries_through_the_pool(target: Target, target_app: App, conn: psycopg.Connection[Any]) -> None:
    attempts: collections.Counter[str] = collections.Counter()

    @target_app.task(name="flaky", max_attempts=5, retry=pgtasks.Fixed(0))
    def flaky(key: str) -> str:
        attempts[key] += 1
        if attempts[key] == 1:
            raise ValueError("first try fails")
        if attempts[key] == 2:
            raise pgtasks.Retry(in_=0, reason="asked to retry")
        return key

    @target_app.task(name="doomed", max_attempts=2, retry=pgtasks.Fixed(0))
    def doomed() -> None:
        raise ValueError("never works")

    flaky.delay_many([("a",), ("b",)])
    doomed.delay()
    drain(target_app)
    rows = {r["task"] + ":" + str(r["args"].get("key", "")): r for r in jobs(conn, target_app.schema)}
    for key in ("a", "b"):
        row = rows[f"flaky:{key}"]
        assert (row["state"], row["attempt"], row["result"], len(row["errors"])) == ("completed", 3, key, 2)
    assert (rows["doomed:"]["state"], rows["doomed:"]["attempt"]) == ("discarded", 2)


# -- enqueue when connections break ------------------------------------------------------------------


def test_enqueue_in_a_transaction_whose_connection_dies_raises_and_leaves_no_job(
    target: Target, target_app: App, conn: psycopg.Connection[Any]
) -> None:
    @target_app.task(name="record")
    def record(x: int) -> None: ...

    with pytest.raises(ConnectionLostError), target_app.transaction() as tx:
        record.delay(1)
        row = tx.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        wait_for(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                      (row[0],)).fetchone() == (0,), timeout=5)
        record.delay(2)  # never silently retried on another connection: it would lose job 1
    assert jobs(conn, target_app.schema) == []
    record.delay(3)  # the app's pool replaced the dead connection
    assert [r["args"]["x"] for r in jobs(conn, target_app.schema)] == [3]


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_standalone_delay_after_a_pooler_restart_uses_a_fresh_connection(
    pgbouncer: PgBouncerLab, app: App, conn: psycopg.Connection[Any], mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    bouncer = pgbouncer.start(f"enqueue-{mode}", mode)
    producer = App(bouncer.dsn, schema=app.schema, pool_size=3)

    @producer.task(name="record")
    def record(x: int) -> None: ...

    # Three idle pooled connections, all of which the restart kills.
    barrier = threading.Barrier(3)

    def enqueue_concurrently(x: int) -> None:
        with producer.transaction():
            barrier.wait(5)
            record.delay(x)

    threads = [threading.Thread(target=enqueue_concurrently, args=(x,)) for x in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    pgbouncer.restart(f"enqueue-{mode}")
    started = time.monotonic()
    record.delay(4)
    record.delay_many([(5,), (6,)])
    assert time.monotonic() - started < 5  # no pool check backoff per dead connection
    producer.close()
    assert sorted(r["args"]["x"] for r in jobs(conn, app.schema)) == [1, 2, 3, 4, 5, 6]
    assert len(events(caplog, "connection.stale_dropped")) >= 1


# -- LISTEN: wakeups, poll-only fallback, listen_dsn ------------------------------------------------------


def register_ping(app: App) -> tuple[pgtasks.Task[[float], None], dict[float, float]]:
    """A `ping(sent)` task that records, per enqueue time, when it started (see measure_wakeups)."""
    seen: dict[float, float] = {}

    @app.task(name="ping")
    def ping(sent: float) -> None:
        seen[sent] = time.monotonic()

    return ping, seen


def measure_wakeups(app: App, task: pgtasks.Task[[float], None], seen: dict[float, float], n: int = 3) -> list[float]:
    """Enqueue `n` pings one after another; each job's start minus its enqueue time, in seconds."""
    latencies = []
    for _ in range(n):
        sent = time.monotonic()
        task.delay(sent)
        deadline = sent + 10
        while sent not in seen:
            assert time.monotonic() < deadline, "the ping job did not start within 10s"
            time.sleep(0.002)
        latencies.append(seen[sent] - sent)
    return latencies


def test_listen_wakeup_latency_or_poll_only_fallback(
    target: Target, target_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    ping, seen = register_ping(target_app)

    if target.mode is PoolMode.TRANSACTION:
        with worker_thread(target_app, poll_interval=0.3) as worker:
            assert worker.notifier is None and not worker.listening
            [line] = events(caplog, "worker.poll_only")
            assert "transaction pooling" in fields(line)["reason"]
            assert "--listen-dsn" in fields(line)["hint"]
            latencies = measure_wakeups(target_app, ping, seen, n=2)
        assert max(latencies) < 0.3 + 10.0, latencies  # picked up by the 0.3 s poll (slack: a loaded machine)
        return
    with worker_thread(target_app, poll_interval=POLL_S) as worker:
        assert worker.listening and worker.notifier is not None and worker.notifier.connected.is_set()
        latencies = measure_wakeups(target_app, ping, seen)
    assert max(latencies) < WAKEUP_BOUND_S, latencies
    assert problems(caplog) == []


def test_transaction_pool_with_a_direct_listen_dsn_wakes_instantly(
    pgbouncer: PgBouncerLab, app: App, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    pooled = App(pgbouncer.instances["transaction"].dsn, schema=app.schema, listen_dsn=database_url)
    ping, seen = register_ping(pooled)

    with worker_thread(pooled, poll_interval=POLL_S) as worker:
        assert worker.listening and worker.listen_plan is not None
        assert worker.listen_plan.database.mode is PoolMode.TRANSACTION
        assert worker.listen_plan.listener is not None and worker.listen_plan.listener.mode is PoolMode.DIRECT
        # Enqueued through the transaction pool: its NOTIFY still reaches the direct listener.
        latencies = measure_wakeups(pooled, ping, seen)
    pooled.close()
    assert max(latencies) < WAKEUP_BOUND_S, latencies
    [budget] = events(caplog, "worker.connections")
    assert fields(budget)["database_mode"] == "transaction" and fields(budget)["listener_mode"] == "direct"
    assert problems(caplog) == []


def test_forced_listen_on_a_transaction_pool_is_a_configuration_error(pgbouncer: PgBouncerLab, app: App) -> None:
    pooled = App(pgbouncer.instances["transaction"].dsn, schema=app.schema)
    worker = pooled.worker(listen=True, burst=True)
    with pytest.raises(ConfigurationError, match="transaction-mode pooler") as info:
        asyncio.run(worker.arun())
    assert "--listen-dsn" in str(info.value)
    # A listen DSN is checked like the database URL: startup options never reach a pooler.
    with pytest.raises(ConfigurationError, match="listen_dsn sets options="):
        pooled.worker(listen_dsn="postgresql://postgres@127.0.0.1:5432/test?options=-c%20statement_timeout%3D5000")
    pooled.close()


def test_cli_listen_flags_behind_a_transaction_pool(pgbouncer: PgBouncerLab, app: App, database_url: str) -> None:
    env = {**os.environ, "PGTASKS_DATABASE_URL": pgbouncer.instances["transaction"].dsn,
           "PGTASKS_SCHEMA": app.schema, "PYTHONPATH": str(ROOT)}
    env.pop("PGTASKS_LISTEN_DSN", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pgtasks", "--app", "tests.apps.slow_app:app", "worker",
                               "--burst", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    forced = run("--listen")
    assert forced.returncode == 2, forced.stderr
    assert "transaction-mode pooler" in forced.stderr and "--listen-dsn" in forced.stderr
    auto = run()
    assert auto.returncode == 0, auto.stderr
    assert "worker.poll_only" in auto.stderr and "transaction pooling" in auto.stderr
    hybrid = run("--listen", "--listen-dsn", database_url)
    assert hybrid.returncode == 0, hybrid.stderr
    assert "listener_mode=direct" in hybrid.stderr and "worker.poll_only" not in hybrid.stderr


# -- listener health -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["direct", "session"], indirect=True)
def test_listener_recovers_when_its_backend_is_killed(
    target: Target, target_app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    ping, seen = register_ping(target_app)

    listener_name = target_app.application_name + "-listener"
    with worker_thread(target_app, poll_interval=POLL_S, canary_interval=0.3, canary_timeout=1.0) as worker:
        notifier = worker.notifier
        assert notifier is not None and notifier.connected.is_set()
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                           (listener_name,)).fetchone()
        assert row is not None, "the listener's backend is visible under its application_name"
        conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        wait_for(lambda: not notifier.connected.is_set(), timeout=5)
        assert worker._current_poll_interval() < 1.0  # polls fast while the listener is down
        wait_for(lambda: notifier.reconnects >= 1 and notifier.connected.is_set(), timeout=10)
        latencies = measure_wakeups(target_app, ping, seen, n=2)
    assert max(latencies) < WAKEUP_BOUND_S, latencies
    # At least once each: on a loaded machine a late canary may count one more loss and recovery.
    assert len(events(caplog, "listener.lost")) >= 1
    assert len(events(caplog, "listener.recovered")) >= 1


def test_canary_catches_a_listener_that_went_deaf(
    app: App, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A half-open LISTEN connection raises no error; only the canary can tell it is deaf."""
    caplog.set_level(logging.INFO, logger="pgtasks")
    params = conninfo_to_dict(database_url)  # TCP, or the embedded server's Unix socket directory
    ping, seen = register_ping(app)

    with freezable_proxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)) as proxy:
        listen_dsn = psycopg.conninfo.make_conninfo(database_url, host="127.0.0.1", port=str(proxy.port))
        with worker_thread(app, poll_interval=POLL_S, listen_dsn=listen_dsn, canary_interval=0.3,
                           canary_timeout=0.7) as worker:
            notifier = worker.notifier
            assert notifier is not None and notifier.connected.is_set()
            assert proxy.freeze() == 1  # the listener's connection: open, silent
            wait_for(lambda: not notifier.connected.is_set(), timeout=10)
            assert notifier.canaries_missed >= 1  # the canary, not an error, found it deaf
            wait_for(notifier.connected.is_set, timeout=10)  # a new connection through the proxy
            latencies = measure_wakeups(app, ping, seen, n=2)
    assert max(latencies) < WAKEUP_BOUND_S, latencies
    lost = events(caplog, "listener.lost")
    assert len(lost) >= 1 and "canary" in fields(lost[0])["error"], [fields(r) for r in lost]
    assert len(events(caplog, "listener.recovered")) >= 1


# -- exhaustion and restarts ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_pool_smaller_than_the_workers_demand_slows_it_but_loses_nothing(
    pgbouncer: PgBouncerLab, app: App, conn: psycopg.Connection[Any], mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    tiny = pgbouncer.start(f"tiny-{mode}", mode, pool_size=2, query_wait_timeout=1)
    pooled = App(tiny.dsn, schema=app.schema)
    runs: collections.Counter[int] = collections.Counter()

    @pooled.task(name="work")
    def work(i: int) -> None:
        runs[i] += 1
        time.sleep(0.002)

    @app.task(name="work")
    def enqueue_side(i: int) -> None: ...

    enqueue_side.delay_many([(i,) for i in range(150)])
    # Two clients pin both server connections (session: for their life; transaction: while
    # their transaction is open), so the worker starts into an exhausted pool.
    hogs = [psycopg.connect(tiny.dsn, autocommit=True) for _ in range(2)]
    for hog in hogs:
        hog.execute("BEGIN")
        hog.execute("SELECT 1")

    def release_hogs() -> None:
        for hog in hogs:
            hog.close()

    def timeouts() -> int:
        return pgbouncer.log(tiny.name).count("closing because: query_wait_timeout")

    before = timeouts()
    timeouts_sat_through: list[int] = []

    def release_once_the_worker_timed_out_twice() -> None:
        # Hold both servers until PgBouncer has failed the worker's startup check twice: it waited,
        # retried into the still exhausted pool and waited again, instead of exiting.
        try:
            wait_for(lambda: timeouts() >= before + 2, timeout=30, interval=0.05)
        finally:
            timeouts_sat_through.append(timeouts() - before)
            release_hogs()

    releaser = threading.Thread(target=release_once_the_worker_timed_out_twice)
    releaser.start()
    try:
        with worker_thread(pooled, concurrency=5, pool_size=3, poll_interval=0.2) as worker:
            wait_for(lambda: states(conn, app.schema)["completed"] == 150, timeout=60)
            assert worker.claimed == 150
    finally:
        releaser.join(20)
        release_hogs()
    pooled.close()
    assert timeouts_sat_through[0] >= 2, timeouts_sat_through
    assert runs == {i: 1 for i in range(150)}  # each job ran exactly once
    assert {r["attempt"] for r in jobs(conn, app.schema)} == {1}
    [waited] = events(caplog, "worker.startup_waiting")  # it started into the exhausted pool and waited
    assert "query_wait_timeout" in fields(waited)["error"]
    assert problems(caplog, logging.ERROR) == []


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_restarting_pgbouncer_mid_drain_loses_nothing(
    pgbouncer: PgBouncerLab, app: App, conn: psycopg.Connection[Any], mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    name = f"restart-{mode}"
    bouncer = pgbouncer.start(name, mode)
    pooled = App(bouncer.dsn, schema=app.schema)
    runs: collections.Counter[int] = collections.Counter()
    ping, seen = register_ping(pooled)

    @pooled.task(name="work")
    def work(i: int) -> None:
        runs[i] += 1
        time.sleep(0.003)

    work.delay_many([(i,) for i in range(400)])
    # Session pooling listens, so it polls every POLL_S: the wakeups measured after the restart are
    # NOTIFYs. Transaction pooling cannot listen and polls.
    poll = POLL_S if mode == "session" else 0.5
    with worker_thread(pooled, concurrency=8, poll_interval=poll, canary_interval=0.3, canary_timeout=1.0) as worker:
        wait_for(lambda: states(conn, app.schema)["completed"] >= 100, timeout=30)
        pgbouncer.restart(name, downtime=0.5)
        work.delay_many([(i,) for i in range(400, 500)])  # the producer's pool recovers too
        wait_for(lambda: states(conn, app.schema)["completed"] == 500, timeout=60)
        if mode == "session":
            notifier = worker.notifier
            assert notifier is not None
            wait_for(lambda: notifier.connected.is_set() and notifier.reconnects >= 1, timeout=10)
            assert max(measure_wakeups(pooled, ping, seen, n=2)) < WAKEUP_BOUND_S
    pooled.close()
    assert runs == {i: 1 for i in range(500)}  # each job ran exactly once
    assert states(conn, app.schema) == {"completed": 500 + len(seen)}
    assert problems(caplog, logging.ERROR) == []


# -- pooler-safe connections and the listen decision, without a pooler -------------------------------


def test_went_stale_sees_a_terminated_backend_without_a_round_trip(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(database_url, autocommit=True) as victim:
        assert not went_stale(victim)
        pid = victim.info.backend_pid
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: went_stale(victim), timeout=5)


def test_waiting_too_long_for_a_pooled_connection_is_a_connection_lost_error() -> None:
    refused = "postgresql://postgres@127.0.0.1:1/test"
    pool = make_pool(refused, application_name="pgt-test", max_size=1, name="refused")
    pool.open(wait=False)
    try:
        with pytest.raises(ConnectionLostError, match="no database connection from pool 'refused'"), \
                pool.connection(timeout=0.3):
            pass
    finally:
        pool.close()

    async def async_side() -> None:
        apool = make_async_pool(refused, application_name="pgt-test", max_size=1, name="arefused")
        await apool.open(wait=False)
        try:
            with pytest.raises(ConnectionLostError, match="arefused"):
                async with apool.connection(timeout=0.3):
                    pass
        finally:
            await apool.close()

    asyncio.run(async_side())


def test_listen_decision_when_detection_cannot_tell(
    app: App, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    unreachable = "postgresql://postgres@127.0.0.1:1/test"

    def plan(listen: bool | None) -> ListenPlan:
        return asyncio.run(plan_listening(app.store, database_url, unreachable, listen=listen, pool_size=3,
                                          application_name="pgt-test"))

    auto = plan(None)
    assert not auto.listen and "cannot connect" in auto.reason
    assert auto.budget() == {"pool": 3, "listener": 0, "total": 3}
    assert auto.database.mode is PoolMode.DIRECT
    forced = plan(True)  # the user insists: listen, warn, and let the canary judge
    assert forced.listen and forced.budget()["total"] == 4
    [warning] = events(caplog, "worker.listen_unverified")
    assert "--listen was given" in fields(warning)["action"]
    off = plan(False)
    assert not off.listen and off.listener is None and off.budget()["listener"] == 0


# -- leader election and periodic ticks through each target (the leader-only services) ----------------


def test_leader_election_and_periodic_ticks_through_each_target(
    target: Target, target_app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers elect one leader, whose scheduler enqueues each tick once; when it stops, the
    other takes over (by the resign NOTIFY where LISTEN works, by the lease's expiry when polling)."""
    caplog.set_level(logging.INFO, logger="pgtasks")
    runs: list[float] = []

    @target_app.periodic(every=timedelta(seconds=1), name="beat")
    @target_app.task(name="beat")
    def beat() -> None:
        runs.append(time.time())

    def enqueued_ticks() -> list[datetime]:
        rows = conn.execute(f"SELECT fire_time FROM \"{target_app.schema}\".periodic_fires "
                            "WHERE schedule = 'beat' AND outcome = 'enqueued' ORDER BY fire_time").fetchall()
        return [row[0] for row in rows]

    options: dict[str, Any] = {"leader_ttl": 2.0, "heartbeat_interval": 0.2, "rescue_after": 5.0,
                               "poll_interval": 0.2}
    with leader_and_follower(target_app, **options) as (first, second):
        assert first.maintenance is not None and second.maintenance is not None
        wait_for(lambda: len(enqueued_ticks()) >= 2, timeout=15)
        assert not second.maintenance.is_leader
        first.request_stop()
        wait_for(lambda: is_leader(second), timeout=10)
        after_takeover = len(enqueued_ticks())
        wait_for(lambda: len(enqueued_ticks()) >= after_takeover + 2, timeout=15)
    ticks = enqueued_ticks()
    assert len(ticks) == len(set(ticks))  # each tick at most once
    assert all(later - earlier == timedelta(seconds=1) for earlier, later in itertools.pairwise(ticks))
    beat_jobs = conn.execute(f"SELECT state::text, count(*) FROM \"{target_app.schema}\".jobs "
                             "WHERE task = 'beat' GROUP BY 1").fetchall()
    assert sum(n for _, n in beat_jobs) == len(ticks)  # one job per tick, no more
    assert len(runs) == dict(beat_jobs).get("completed", 0)
    assert problems(caplog, logging.ERROR) == []
