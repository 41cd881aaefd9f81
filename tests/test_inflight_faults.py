"""Faults that arrive while work is in flight: a PostgreSQL restart (direct, and behind PgBouncer),
a PgBouncer restart, and pg_terminate_backend of the worker's sessions.

Jobs are held in each state when the fault cuts: running (a task blocked on an Event), claimed
ahead and waiting locally (concurrency 1 busy, short jobs claimed ahead), outcome pending (the
completer's UPDATE blocked by a lock), a fetch on its way, and a standalone `.delay()` mid-flight.
The lock is a `LOCK TABLE jobs IN SHARE MODE` held by a session of the test: it blocks every write
to the jobs table, so the completer's UPDATE, the worker's fetch and the producer's INSERT wait on
the server, where the fault finds them.

What each fault does to a statement blocked there (docs/pgbouncer.md, "Dropped connections"):
a PostgreSQL restart or a terminated session rolls it back; a PgBouncer restart leaves it running
on the server, so when the lock goes (the tests release it while PgBouncer is down) it commits and
its reply is lost. Those are the two lost-reply paths: a lost fetch reply (`worker.claims_released`)
and a lost outcome reply (`job.outcome_write_uncertain`). Everything runs on a private server
(tests/servers.py), so nothing here restarts or terminates anything another test uses.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from pgtasks import App, ConnectionLostError, Worker
from pgtasks.worker import worker as worker_module
from tests.helpers import wait_for, worker_thread
from tests.servers import Fault, PrivateServer

# Generous bounds for a loaded 2-core machine: a restart takes well under a second, reconnects
# back off for at most a few seconds.
RECOVERY_S = 60.0
STATE_S = 20.0


# -- helpers -------------------------------------------------------------------------------------------


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The fields of every `event` logged by pgtasks, in order."""
    return [dict(r.__dict__["fields"]) for r in caplog.records if getattr(r, "event", None) == event]


def logged_job_ids(caplog: pytest.LogCaptureFixture, event: str) -> list[int]:
    """Job ids named by `event` lines: `job_id=` on per-job events, `job_ids=1,2` on batch events."""
    ids: list[int] = []
    for found in events(caplog, event):
        if "job_id" in found:
            ids.append(int(found["job_id"]))
        else:
            ids.extend(int(i) for i in str(found["job_ids"]).split(","))
    return sorted(ids)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("pgtasks") and r.levelno >= logging.ERROR]


@dataclass
class Gates:
    """Per-key Events for jobs that block until released: `started[k]` is set when job k runs."""

    runs: collections.Counter[int] = field(default_factory=collections.Counter)
    started: dict[int, threading.Event] = field(default_factory=lambda: collections.defaultdict(threading.Event))
    release: dict[int, threading.Event] = field(default_factory=lambda: collections.defaultdict(threading.Event))
    lock: threading.Lock = field(default_factory=threading.Lock)
    all_open: bool = False  # set by open_all(): jobs that start later do not wait either

    def enter(self, key: int) -> None:
        with self.lock:
            self.runs[key] += 1
            started, release = self.started[key], self.release[key]
            if self.all_open:
                release.set()
        started.set()
        if not release.wait(RECOVERY_S):  # recorded, asserted by the test: a hook cannot raise here
            with self.lock:
                self.runs[-key - 1] += 1  # a key no job has: "job `key` was never released"

    def record(self, key: int) -> None:
        with self.lock:
            self.runs[key] += 1

    def running(self) -> set[int]:
        with self.lock:
            return {k for k, e in self.started.items() if e.is_set() and not self.release[k].is_set()}

    def open(self, key: int) -> None:
        with self.lock:
            event = self.release[key]
        event.set()

    def open_all(self) -> None:
        with self.lock:
            self.all_open = True
            events_ = list(self.release.values())
        for event in events_:
            event.set()


@dataclass
class Scenario:
    """A worker's App and a producer's App on one fresh schema of the fault's target, with two tasks:
    `quick(k)` (async, returns at once) and `gated(k)` (sync, blocks until its gate opens)."""

    app: App
    producer: App
    gates: Gates
    name: str

    @property
    def schema(self) -> str:
        return self.app.schema


@contextmanager
def running_worker(sc: Scenario, **options: Any) -> Iterator[Worker]:
    """worker_thread() whose gates all open before it is stopped, so a failed test stops it at once."""
    with worker_thread(sc.app, **worker_options(**options)) as worker:
        try:
            yield worker
        finally:
            sc.gates.open_all()


@contextmanager
def scenario(dsn: str, server: PrivateServer) -> Iterator[Scenario]:
    name = f"pgt-inflight-{uuid.uuid4().hex[:8]}"
    schema = f"pgt_{uuid.uuid4().hex[:12]}"
    app = App(dsn, schema=schema, application_name=name)
    producer = App(dsn, schema=schema, application_name=f"{name}-producer")
    gates = Gates()
    for each in (app, producer):
        @each.task(name="quick")
        async def quick(k: int) -> None:
            gates.record(k)

        @each.task(name="gated")
        def gated(k: int) -> None:
            gates.enter(k)

    app.migrate()
    try:
        yield Scenario(app, producer, gates, name)
    finally:
        gates.open_all()
        app.close()
        producer.close()
        with server.connect() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# What may wait behind the lock, by the named query it runs (pg_stat_activity shows its text).
STATEMENTS = {"fetch": "job_fetch_available", "outcome": "job_set_outcome_many", "insert": "job_insert_now"}


class JobsLock:
    """`LOCK TABLE jobs IN SHARE MODE` held by a prepared transaction (two-phase commit).

    Every INSERT and UPDATE on jobs waits behind it, on the server. A prepared transaction belongs
    to no session, so the lock outlives whatever the fault kills: a restart recovers it, a
    terminated session leaves it. So the statements waiting behind it are surely rolled back by
    a restart or a termination (none can slip through as the lock holder dies first), and surely
    still waiting after a PgBouncer restart. release() (ROLLBACK PREPARED) lets them go on.
    """

    def __init__(self, server: PrivateServer, app: App) -> None:
        self.server = server
        self.gid = f"pgt-inflight-{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server.dsn, application_name="pgt-inflight-locker") as conn:
            conn.execute(f'LOCK TABLE "{app.schema}".jobs IN SHARE MODE')
            conn.execute(f"PREPARE TRANSACTION '{self.gid}'")
        self.held = True
        # The text of a query up to its first parameter: what pg_stat_activity.query starts with
        # (it keeps only the first track_activity_query_size bytes, so match the start).
        self.prefixes = {kind: app.store.queries[name].split("%(")[0][:200] for kind, name in STATEMENTS.items()}

    def waiting(self) -> collections.Counter[str]:
        """What waits behind the lock now: 'fetch', 'outcome', 'insert' (or the start of the query).

        pg_blocking_pids() names a prepared transaction as pid 0; it is this test's only one.
        """
        with self.server.connect() as observer:
            rows = observer.execute("SELECT query FROM pg_stat_activity WHERE 0 = ANY(pg_blocking_pids(pid))"
                                    ).fetchall()
        return collections.Counter(self._kind(row[0]) for row in rows)

    def _kind(self, query: str) -> str:
        return next((kind for kind, prefix in self.prefixes.items() if query.startswith(prefix)), query[:80])

    def release(self) -> None:
        with self.server.connect() as conn:
            conn.execute(f"ROLLBACK PREPARED '{self.gid}'")
        self.held = False

    def __enter__(self) -> JobsLock:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.held:  # a test that failed while holding the lock must not leave the worker blocked
            self.release()


def strike(fault: Fault, name: str, lock: JobsLock) -> None:
    """Cut, release the lock while the connections are down, restore.

    Releasing the lock in between is what makes a PgBouncer restart lose replies: the statements that
    waited on the server commit while no client connection is left to read their answer.
    """
    fault.cut(name)
    if fault.server_statements_survive:
        lock.release()
    fault.restore()
    if lock.held:  # only now: the retries after the restart wait behind it too, then go on
        lock.release()


def job_rows(server: PrivateServer, schema: str) -> list[dict[str, Any]]:
    with server.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT id, queue, args, state::text AS state, attempt, claims, attempted_by, errors "
                    f'FROM "{schema}".jobs ORDER BY id')
        return cur.fetchall()


def completed(server: PrivateServer, schema: str, queue: str = "default") -> int:
    return sum(1 for r in job_rows(server, schema) if r["queue"] == queue and r["state"] == "completed")


def wait_completed(server: PrivateServer, schema: str, count: int, timeout: float = RECOVERY_S) -> None:
    """Wait until `count` jobs of the default queue completed; on timeout, say where the others are."""
    try:
        wait_for(lambda: completed(server, schema) == count, timeout=timeout)
    except AssertionError:
        rows = [(r["id"], r["state"], r["attempt"], r["claims"]) for r in job_rows(server, schema)
                if r["state"] != "completed"]
        raise AssertionError(f"{count} jobs did not complete within {timeout}s; unfinished: {rows}") from None


def ids_by_key(rows: list[dict[str, Any]]) -> dict[int, int]:
    return {r["args"]["k"]: r["id"] for r in rows if r["queue"] == "default"}


class DelayInFlight:
    """A standalone `.delay()` of the producer on a thread, to a queue no worker serves."""

    def __init__(self, producer: App) -> None:
        self.error: BaseException | None = None
        self.returned = False
        self._thread = threading.Thread(target=self._run, args=(producer,), name="delay-in-flight")
        self._thread.start()

    def _run(self, producer: App) -> None:
        try:
            producer.tasks["quick"].configure(queue="elsewhere").delay(-1)
            self.returned = True
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which asserts on it
            self.error = exc

    def join(self) -> None:
        self._thread.join(RECOVERY_S)
        assert not self._thread.is_alive(), "the .delay() never returned"


def worker_options(**extra: Any) -> dict[str, Any]:
    # elect=False: no leader, so no rescuer or cleaner; what is put back or written twice is the
    # fetch loop's and the completer's doing alone, and the asserts can be exact.
    # grace=2: a test that fails with a job held stops its worker in seconds, not in 30.
    return {"grace": 2.0, "poll_interval": 0.2, "heartbeat_interval": 0.5, "rescue_after": 5.0, "elect": False,
            "canary_interval": 0.5, "canary_timeout": 2.0, **extra}


# -- every state at once --------------------------------------------------------------------------------


def test_jobs_in_every_state_survive_a_fault(
    fault: Fault, private_server: PrivateServer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Running, claimed ahead, outcome pending and a `.delay()` mid-flight, all when the fault cuts.

    Every job runs exactly once. The completer's write that waited on the server is retried: after
    a restart or a termination it was rolled back, so the retry writes it; after a PgBouncer restart
    it committed with its reply lost, so the retry finds it written (`job.outcome_write_uncertain`).
    The `.delay()` raises ConnectionLostError; its job exists only where its INSERT outlived the cut
    and committed (PgBouncer restart), as the docs say: never retried, because it may have committed.
    """
    caplog.set_level(logging.INFO, logger="pgtasks")
    # The jobs claimed ahead must stay waiting while the slot is held, not go back after 0.5 s.
    monkeypatch.setattr(worker_module, "STALL_SECONDS", RECOVERY_S * 10)
    with scenario(fault.dsn, private_server) as sc, running_worker(sc, concurrency=1) as worker:
        quick, gated = sc.producer.tasks["quick"], sc.producer.tasks["gated"]
        # A round of short jobs opens the claim-ahead allowance.
        quick.delay_many([(k,) for k in range(40)])
        wait_completed(private_server, sc.schema, 40, timeout=STATE_S)
        assert worker.fetch_ahead.allowance() >= 3, worker.fetch_ahead.mean
        # Running: gated(100) holds the only slot; claimed ahead: the three behind it wait locally.
        ahead_before = worker.claimed_ahead
        gated.delay_many([(k,) for k in (100, 101, 102, 103)])
        wait_for(lambda: sc.gates.running() == {100} and len(worker._ready) == 3, timeout=STATE_S)
        ahead = sorted(json.loads(job.args)["k"] for job in worker._ready)
        assert ahead == [101, 102, 103] and worker.claimed_ahead - ahead_before == 3
        with JobsLock(private_server, sc.app) as lock:
            # Outcome pending: 100 ends, its UPDATE waits on the lock; 101 moves up from the local queue.
            sc.gates.open(100)
            wait_for(lambda: sc.gates.running() == {101} and len(worker._ready) == 2, timeout=STATE_S)
            delay = DelayInFlight(sc.producer)
            wait_for(lambda: lock.waiting()["outcome"] == 1 and lock.waiting()["insert"] == 1, timeout=STATE_S)
            assert worker.completer is not None and worker.completer.pending_job_ids() != []
            strike(fault, sc.name, lock)

        delay.join()
        assert isinstance(delay.error, ConnectionLostError), delay.error
        sc.gates.open_all()
        wait_completed(private_server, sc.schema, 44)
        quick.delay(200)  # the producer's pool replaced its dead connections
        wait_completed(private_server, sc.schema, 45)
        rows = job_rows(private_server, sc.schema)
    ids = ids_by_key(rows)
    assert sc.gates.runs == {k: 1 for k in [*range(40), 100, 101, 102, 103, 200]}
    assert [(r["state"], r["attempt"], r["claims"]) for r in rows if r["queue"] == "default"] == \
        [("completed", 1, 1)] * 45
    elsewhere = [r for r in rows if r["queue"] == "elsewhere"]
    assert len(elsewhere) == (1 if fault.server_statements_survive else 0)
    assert logged_job_ids(caplog, "job.outcome_write_uncertain") == \
        ([ids[100]] if fault.server_statements_survive else [])
    assert len(events(caplog, "completer.failing")) >= 1  # the pending write did fail and was retried
    assert events(caplog, "worker.claims_released") == []  # no fetch reply was lost here
    assert events(caplog, "job.outcome_rejected") == []
    assert errors_logged(caplog) == []


# -- a fetch on its way ----------------------------------------------------------------------------------


def test_a_fetch_in_flight_when_the_fault_cuts(
    fault: Fault, private_server: PrivateServer, caplog: pytest.LogCaptureFixture,
) -> None:
    """A fetch waits on the server when the connections go. Rolled back (restart, termination): the
    jobs were never claimed. Committed with its reply lost (PgBouncer restart): the worker puts its
    claims back when it reconnects (`worker.claims_released`, attempt given back), and runs each once."""
    caplog.set_level(logging.INFO, logger="pgtasks")
    with scenario(fault.dsn, private_server) as sc:
        sc.producer.tasks["quick"].delay_many([(k,) for k in range(3)])
        with JobsLock(private_server, sc.app) as lock, running_worker(sc, concurrency=4) as worker:
            wait_for(lambda: lock.waiting()["fetch"] == 1, timeout=STATE_S)
            fault.cut(sc.name)
            if fault.server_statements_survive:  # the fetch commits: its jobs are claimed, nobody knows
                lock.release()
                claimed_by = [("running", worker.worker_id)] * 3
                wait_for(lambda: [(r["state"], r["attempted_by"]) for r in job_rows(private_server, sc.schema)]
                         == claimed_by, timeout=STATE_S)
            fault.restore()
            if lock.held:
                lock.release()
            wait_completed(private_server, sc.schema, 3)
        rows = job_rows(private_server, sc.schema)
    assert sc.gates.runs == {0: 1, 1: 1, 2: 1}
    claims = 2 if fault.server_statements_survive else 1
    assert [(r["state"], r["attempt"], r["claims"]) for r in rows] == [("completed", 1, claims)] * 3
    released = events(caplog, "worker.claims_released")
    if fault.server_statements_survive:
        assert logged_job_ids(caplog, "worker.claims_released") == [r["id"] for r in rows]
        assert [e["reason"] for e in released] == ["a fetch committed but its reply was lost with the connection"]
    else:
        assert released == []
    assert len(events(caplog, "worker.fetch_failing")) >= 1
    assert all(r["errors"] == [] for r in rows)  # a put-back claim leaves no error entry
    assert errors_logged(caplog) == []


# -- each of the worker's sessions in turn ---------------------------------------------------------------


def worker_sessions(server: PrivateServer, name: str) -> list[tuple[int, str]]:
    """(pid, application_name) of the worker's pool sessions and of its listener."""
    with server.connect() as conn:
        rows = conn.execute("SELECT pid, application_name FROM pg_stat_activity "
                            "WHERE application_name IN (%s, %s) ORDER BY pid", [name, f"{name}-listener"]).fetchall()
    return [(row[0], row[1]) for row in rows]


def terminate_one(server: PrivateServer, pid: int) -> None:
    assert server.terminate("pid = %s", [pid]) == [pid]


def run_one_gated(sc: Scenario, server: PrivateServer, key: int, during: Callable[[], None] = lambda: None) -> None:
    """Enqueue gated(key), call `during()` while it runs, release it, wait until it completed."""
    done_before = completed(server, sc.schema)
    sc.producer.tasks["gated"].delay(key)
    wait_for(lambda: sc.gates.running() == {key}, timeout=STATE_S)
    during()
    sc.gates.open(key)
    wait_for(lambda: completed(server, sc.schema) == done_before + 1, timeout=RECOVERY_S)


def test_terminating_each_worker_session_in_turn_with_a_job_running(
    private_server: PrivateServer, caplog: pytest.LogCaptureFixture,
) -> None:
    """pg_terminate_backend() of one session of the worker at a time (each pool connection, then the
    listener), each while a job runs: the job's outcome is written, the next job still starts, and
    the listener is replaced (`listener.lost`, then `listener.recovered` by its canary)."""
    caplog.set_level(logging.INFO, logger="pgtasks")
    with scenario(private_server.dsn, private_server) as sc, \
            running_worker(sc, concurrency=2, pool_size=3) as worker:
        gated = sc.producer.tasks["gated"]
        # Two jobs at once, so the pool opens more than its first connection.
        gated.delay_many([(0,), (1,)])
        wait_for(lambda: sc.gates.running() == {0, 1}, timeout=STATE_S)
        sc.gates.open(0)
        sc.gates.open(1)
        wait_for(lambda: completed(private_server, sc.schema) == 2, timeout=STATE_S)
        sessions = worker_sessions(private_server, sc.name)
        kinds = collections.Counter(app_name for _, app_name in sessions)
        assert kinds[f"{sc.name}-listener"] == 1 and kinds[sc.name] >= 1, sessions
        pool_first = sorted(sessions, key=lambda s: s[1] != sc.name)  # the listener last
        for turn, (pid, _) in enumerate(pool_first, start=2):
            run_one_gated(sc, private_server, turn, during=functools.partial(terminate_one, private_server, pid))
        notifier = worker.notifier
        assert notifier is not None
        wait_for(notifier.connected.is_set, timeout=RECOVERY_S)
        last = len(pool_first) + 2
        run_one_gated(sc, private_server, last)  # still woken and run after every session was replaced
        rows = job_rows(private_server, sc.schema)
    assert sc.gates.runs == {k: 1 for k in range(last + 1)}
    assert [(r["state"], r["attempt"], r["claims"]) for r in rows] == [("completed", 1, 1)] * (last + 1)
    assert len(events(caplog, "listener.lost")) == 1
    assert len(events(caplog, "listener.recovered")) == 1
    assert events(caplog, "job.outcome_rejected") == []
    assert errors_logged(caplog) == []
