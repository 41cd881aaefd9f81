"""Flow control against a real PostgreSQL: concurrency limits per queue, per task and per key, and
rate limits, enforced in the claim across workers (docs/limits.md).

- Two claimers at the same instant, forced with two connections: the second waits for the first's
  lock and then sees its claims, so a limit is never exceeded.
- Worker processes: an audit of start and end times written by the tasks themselves shows no key
  ever ran twice at once and the capped queue never ran more than 3.
- A rate limit across worker processes: starts per one-second window never exceed rate + burst, and
  the whole set takes as long as the rate says.
- Through the PgBouncer transaction pool; a limited queue does not slow an unlimited one; a
  worker held back by a rate limit sleeps until the next token instead of polling.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgtasks
from pgtasks import App, Limit
from pgtasks.core.errors import ConfigurationError, TaskArgumentError
from pgtasks.core.limits import QueueLimits
from pgtasks.core.models import ClaimedJob
from pgtasks.storage.limits import LimitedClaim, _fetch_limited
from pgtasks.storage.steps import Statement
from tests.conftest import ROOT
from tests.helpers import drain, wait_for
from tests.pgbouncer_fixtures import PgBouncerLab

LIMITS_APP = "tests.apps.limits_app:app"


def declare(app: App) -> None:
    """What a worker does at start: write the code's limits."""
    tasks = {t.name: (t.config.queue, t.config.limits) for t in app.tasks.values()}
    with app.connect() as conn:
        app.store.limits_declare(conn, app.registry.queue_limits, tasks)


def running_count(conn: psycopg.Connection[Any], schema: str, queue: str) -> int:
    row = conn.execute(f'SELECT count(*) FROM "{schema}".jobs WHERE queue = %s AND state = %s',
                       [queue, "running"]).fetchone()
    assert row is not None
    return int(row[0])


def call(job: ClaimedJob) -> tuple[str, Any, int]:
    """(task, customer or None, n) of a claimed job."""
    args = json.loads(job.args)
    return job.task, args.get("customer"), args["n"]


def plain_claim(app: App, queues: list[str], limit: int) -> list[ClaimedJob]:
    async def claim() -> list[ClaimedJob]:
        async with await psycopg.AsyncConnection.connect(app.dsn, autocommit=True) as conn:
            return await app.store.ajob_fetch_available(conn, queues=queues, limit=limit, worker_id="w")
    return asyncio.run(claim())


def states(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    rows = conn.execute(f'SELECT state::text, count(*) FROM "{schema}".jobs GROUP BY 1').fetchall()
    return {str(s): int(n) for s, n in rows}


# -- the claim, statement by statement -----------------------------------------------------------


def test_a_second_claimer_waits_for_the_first_and_sees_its_claims(
        app: App, database_url: str, conn: psycopg.Connection[Any]) -> None:
    """A holds the queue's lock between its two statements; B's claim starts meanwhile and waits.
    Once A commits 3 claims, B finds the queue at its limit of 3 and claims nothing."""
    app.queue("capped", concurrency=3)

    @app.task(name="capped.work", queue="capped")
    def work(n: int) -> int:
        return n

    declare(app)
    work.delay_many([work.s(i) for i in range(10)])

    claims: dict[str, LimitedClaim] = {}
    with psycopg.connect(database_url, autocommit=True) as conn_a, \
            psycopg.connect(database_url, autocommit=True) as conn_b:
        b_pid = conn_b.info.backend_pid

        def claim_b() -> None:
            claims["b"] = app.store.job_fetch_limited(conn_b, queues=["capped"], limit=10, worker_id="b")

        operation = _fetch_limited(app.store.queries, ["capped"], 10, "a", None, 500)
        with conn_a.transaction():
            lock: Statement = next(operation)  # type: ignore[assignment]
            locked = conn_a.execute(lock.query, lock.params).fetchall()
            assert locked == [("capped",)]
            thread = threading.Thread(target=claim_b)
            thread.start()
            wait_for(lambda: conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                          [b_pid]).fetchone() == ("Lock",))
            fetch: Statement = operation.send(locked)  # type: ignore[assignment]
            rows = conn_a.execute(fetch.query, fetch.params).fetchall()
            with pytest.raises(StopIteration) as done:
                operation.send(rows)
            claims["a"] = done.value.value
            assert thread.is_alive()  # still waiting for A's lock
        thread.join(10)
    assert len(claims["a"].jobs) == 3 and claims["a"].held
    assert claims["b"].jobs == [] and claims["b"].held
    assert running_count(conn, app.schema, "capped") == 3


def test_per_key_task_and_queue_limits_in_one_claim(app: App, conn: psycopg.Connection[Any]) -> None:
    app.queue("mixed", concurrency=4)

    @app.task(name="per_customer", queue="mixed", concurrency=Limit(max=1, key="customer"))
    def per_customer(customer: str, n: int) -> int:
        return n

    @app.task(name="whole", queue="mixed", concurrency=2)
    def whole(n: int) -> int:
        return n

    declare(app)
    per_customer.delay_many([per_customer.s("a", i) for i in range(3)] + [per_customer.s("b", 9)])
    whole.delay_many([whole.s(i) for i in range(5)])
    with app.connect() as c:
        first = app.store.job_fetch_limited(c, queues=["mixed"], limit=100, worker_id="w")
    # In id order: customer a once (its other two wait), customer b once, then 2 of `whole`: the
    # queue's 4 places are full.
    assert sorted(call(j) for j in first.jobs) == [("per_customer", "a", 0), ("per_customer", "b", 9),
                                                   ("whole", None, 0), ("whole", None, 1)]
    assert first.held and first.wake_in is None  # only concurrency held them: no token to wait for
    with app.connect() as c:
        again = app.store.job_fetch_limited(c, queues=["mixed"], limit=100, worker_id="w")
    assert again.jobs == [] and again.held
    # The customer-a job finishes: customer a's next job (not a third `whole`) takes its place.
    conn.execute(f'''UPDATE "{app.schema}".jobs SET state = 'completed', finalized_at = now()
                     WHERE id = %s''', [next(j.id for j in first.jobs if call(j)[1] == "a")])
    with app.connect() as c:
        third = app.store.job_fetch_limited(c, queues=["mixed"], limit=100, worker_id="w")
    assert [call(j) for j in third.jobs] == [("per_customer", "a", 1)]


def test_a_rate_limit_takes_tokens_and_says_when_the_next_is_due(app: App) -> None:
    @app.task(name="paced", queue="paced", rate_limit=Limit(rate="2/s", burst=3))
    def paced(n: int) -> int:
        return n

    declare(app)
    paced.delay_many([paced.s(i) for i in range(10)])
    with app.connect() as c:
        burst = app.store.job_fetch_limited(c, queues=["paced"], limit=10, worker_id="w")
        empty = app.store.job_fetch_limited(c, queues=["paced"], limit=10, worker_id="w")
    assert len(burst.jobs) == 3  # a full bucket: the burst
    assert empty.jobs == [] and empty.held
    assert empty.wake_in is not None and 0.3 < empty.wake_in <= 0.5  # one token per 0.5 s
    time.sleep(empty.wake_in + 0.05)
    with app.connect() as c:
        one = app.store.job_fetch_limited(c, queues=["paced"], limit=10, worker_id="w")
    assert len(one.jobs) == 1


def test_a_per_key_rate_limits_each_key_on_its_own(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="tenant_calls", queue="tenants", rate_limit=Limit(rate="1/m", key="tenant"))
    def tenant_calls(tenant: str, n: int) -> int:
        return n

    declare(app)
    tenant_calls.delay_many([tenant_calls.s(t, i) for i in range(3) for t in ("x", "y")])
    with app.connect() as c:
        claimed = app.store.job_fetch_limited(c, queues=["tenants"], limit=10, worker_id="w")
        none = app.store.job_fetch_limited(c, queues=["tenants"], limit=10, worker_id="w")
    assert sorted(tuple(json.loads(j.args).values()) for j in claimed.jobs) == [(0, "x"), (0, "y")]
    assert none.jobs == [] and none.wake_in is not None and 50 < none.wake_in <= 60
    buckets = conn.execute(f'SELECT key, tokens FROM "{app.schema}".key_buckets ORDER BY key').fetchall()
    assert [(k, round(t, 3)) for k, t in buckets] == [('"x"', 0.0), ('"y"', 0.0)]


def test_the_plain_claim_leaves_limited_queues_to_the_limited_claim(app: App) -> None:
    app.queue("capped", concurrency=1)

    @app.task(name="c", queue="capped")
    def c(n: int) -> int:
        return n

    @app.task(name="k", queue="keyed", concurrency=Limit(max=1, key="n"))
    def k(n: int) -> int:
        return n

    @app.task(name="free", queue="free")
    def free(n: int) -> int:
        return n

    declare(app)
    for task in (c, k, free):
        task.delay_many([task.s(i) for i in range(3)])
    plain = plain_claim(app, ["capped", "keyed", "free"], 100)
    assert sorted(j.queue for j in plain) == ["free"] * 3


def test_limits_changed_while_claiming_take_effect_at_the_next_claim(app: App) -> None:
    app.queue("q", concurrency=1)

    @app.task(name="t", queue="q")
    def t(n: int) -> int:
        return n

    declare(app)
    t.delay_many([t.s(i) for i in range(10)])
    with app.connect() as conn:
        assert len(app.store.job_fetch_limited(conn, queues=["q"], limit=10, worker_id="w").jobs) == 1
        app.store.limits_queue_set(conn, "q", QueueLimits.create(4, None))
        assert len(app.store.job_fetch_limited(conn, queues=["q"], limit=10, worker_id="w").jobs) == 3
        app.store.limits_queue_set(conn, "q", QueueLimits(), clear=True)
        assert app.store.job_fetch_limited(conn, queues=["q"], limit=10, worker_id="w").jobs == []  # unlimited now
    assert len(plain_claim(app, ["q"], 10)) == 6


def test_a_start_keeps_an_operators_value_unless_the_declaration_changed(app: App, database_url: str,
                                                                          conn: psycopg.Connection[Any]) -> None:
    app.queue("pay", concurrency=5)
    declare(app)
    with app.connect() as c:
        app.store.limits_queue_set(c, "pay", QueueLimits.create(2, None))
    declare(app)  # the same code starts again: the operator's 2 stays
    query = f'SELECT concurrency FROM "{app.schema}".queues WHERE name = %s'
    assert conn.execute(query, ["pay"]).fetchone() == (2,)
    changed = App(database_url, schema=app.schema)
    changed.queue("pay", concurrency=7)
    declare(changed)  # a deploy that changes the declaration: it wins
    assert conn.execute(query, ["pay"]).fetchone() == (7,)
    changed.close()


def test_a_task_that_drops_its_limit_loses_its_row(app: App, database_url: str,
                                                   conn: psycopg.Connection[Any]) -> None:
    @app.task(name="t", queue="q", concurrency=2)
    def t(n: int) -> int:
        return n

    declare(app)
    assert conn.execute(f'SELECT count(*) FROM "{app.schema}".task_limits').fetchone() == (1,)
    later = App(database_url, schema=app.schema)

    @later.task(name="t", queue="q")
    def t2(n: int) -> int:
        return n

    declare(later)
    assert conn.execute(f'SELECT count(*) FROM "{app.schema}".task_limits').fetchone() == (0,)
    later.close()


# -- enqueue ---------------------------------------------------------------------------------------


def test_a_limited_task_refuses_another_queue_and_bad_keys(app: App) -> None:
    @app.task(name="t", queue="q", concurrency=Limit(max=1, key="customer"))
    def t(customer: object) -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"queue='other': this task has limits, enforced in its own queue 'q'"):
        t.apply_async(args=("a",), queue="other")

    @app.task(name="by_fn", queue="q2", concurrency=Limit(max=1, key=lambda a: a["x"]["id"]))
    def by_fn(x: dict[str, int]) -> None:
        return None

    with pytest.raises(TaskArgumentError, match=r"the limit key function .* raised KeyError"):
        by_fn.delay({"nope": 1})
    ref = by_fn.delay({"id": 7})
    with app.connect() as conn:
        row = conn.execute(f'SELECT limit_key FROM "{app.schema}".jobs WHERE id = %s', [ref.id]).fetchone()
    assert row == ("7",)


# -- workers -----------------------------------------------------------------------------------------


def test_a_rate_limited_queue_does_not_slow_an_unlimited_one_on_the_same_worker(app: App) -> None:
    """One worker serves both: the unlimited queue's 200 jobs finish while the rate-limited queue
    (2 a second) has started only its first few, and the limited queue still runs at its rate."""
    finished: dict[str, list[float]] = defaultdict(list)

    @app.task(name="slow_lane", queue="paced", rate_limit="2/s")
    def slow_lane(n: int) -> None:
        finished["paced"].append(time.monotonic())

    @app.task(name="fast_lane", queue="free")
    def fast_lane(n: int) -> None:
        finished["free"].append(time.monotonic())

    slow_lane.delay_many([slow_lane.s(i) for i in range(10)])
    fast_lane.delay_many([fast_lane.s(i) for i in range(200)])
    started = time.monotonic()
    drain(app, queues=["paced", "free"], concurrency=10, poll_interval=1.0)
    assert len(finished["free"]) == 200 and len(finished["paced"]) == 10
    free_took = max(finished["free"]) - started
    paced = sorted(finished["paced"])
    paced_by_then = sum(1 for t in paced if t <= started + free_took)
    assert paced_by_then <= 4, (free_took, paced_by_then)  # the burst (1) plus at most 1.5 s of tokens
    assert 9 / 2 - 0.1 <= paced[-1] - paced[0] <= 12.0  # 9 tokens after the first, 2 a second


def test_a_worker_held_back_by_a_rate_limit_sleeps_until_the_next_token(app: App) -> None:
    """A 3 s poll interval, 4 tokens a second: the 8 jobs start about 0.25 s apart, each when its
    token is due, with about two claims per token (one that takes it, one that learns the next)."""
    starts: list[float] = []

    @app.task(name="paced", queue="paced", rate_limit="4/s")
    def paced(n: int) -> None:
        starts.append(time.monotonic())

    paced.delay_many([paced.s(i) for i in range(8)])
    worker = app.worker(queues=["paced"], burst=True, poll_interval=3.0, concurrency=4)
    asyncio.run(worker.arun())
    assert worker.claimed == 8
    took = starts[-1] - starts[0]
    assert 7 / 4 - 0.1 <= took < 5.0  # 7 tokens after the first at 4 a second; not one per 3 s poll
    assert worker.flow.limited_claims <= 2 * 8 + 2, worker.flow.limited_claims


def test_limits_hold_through_the_pgbouncer_transaction_pool(
        app: App, pgbouncer: PgBouncerLab, conn: psycopg.Connection[Any]) -> None:
    through_pool = App(pgbouncer.instances["transaction"].dsn, schema=app.schema)
    peak: list[int] = []
    lock = threading.Lock()
    running: dict[str, int] = defaultdict(int)

    @through_pool.task(name="per_customer", queue="keyed", concurrency=Limit(max=1, key="customer"))
    def per_customer(customer: int, n: int) -> None:
        with lock:
            running[str(customer)] += 1
            peak.append(running[str(customer)])
        time.sleep(0.005)
        with lock:
            running[str(customer)] -= 1

    per_customer.delay_many([per_customer.s(i % 4, i) for i in range(60)])
    worker = drain(through_pool, queues=["keyed"], concurrency=8, poll_interval=0.05)
    assert worker.listening is False  # poll-only behind the transaction pool
    assert max(peak) == 1 and len(peak) == 60
    assert states(conn, app.schema) == {"completed": 60}
    through_pool.close()


# -- worker processes ------------------------------------------------------------------------------


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *options: str) -> None:
        log = (self.logs / f"worker-{len(self.procs)}.log").open("wb")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "pgtasks", "--app", LIMITS_APP, "worker", "--poll-interval", "0.1",
             "--heartbeat-interval", "0.5", *options], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        log.close()

    def output(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.logs.glob("worker-*.log")))

    def stop(self) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(20))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes


def audit_lines(path: Path) -> list[tuple[str, str, float, float]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [(kind, key, float(start), float(end)) for kind, key, start, end, _pid in (ln.split() for ln in lines)]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda e: (e[0], e[1]))
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


@pytest.fixture
def limits_app(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               app: App) -> tuple[App, dict[str, str], Path]:
    audit = tmp_path / "audit.log"
    env = {**env, "LIMITS_AUDIT": str(audit)}
    for name in ("PGTASKS_DATABASE_URL", "PGTASKS_SCHEMA", "LIMITS_AUDIT"):
        monkeypatch.setenv(name, env[name])
    from tests.apps import limits_app as module
    return module.make_app(), env, audit


def test_four_worker_processes_never_run_a_key_twice_or_the_capped_queue_past_3(
        limits_app: tuple[App, dict[str, str], Path], tmp_path: Path, conn: psycopg.Connection[Any]) -> None:
    producer, env, audit = limits_app
    per_customer, capped = producer.tasks["limits.per_customer"], producer.tasks["limits.capped"]
    per_customer.delay_many([per_customer.s(i % 10, i) for i in range(1000)])
    capped.delay_many([capped.s(i) for i in range(100)])
    group = Processes(env, tmp_path)
    try:
        for _ in range(4):
            group.start("--queues", "keyed,capped", "--concurrency", "4")
        wait_for(lambda: states(conn, producer.schema).get("completed", 0) == 1100, timeout=120)
        codes = group.stop()
    finally:
        group.stop()
        producer.close()
    assert codes == [0, 0, 0, 0], group.output()[-3000:]
    runs = audit_lines(audit)
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for kind, key, start, end in runs:
        if kind == "key":
            by_key[key].append((start, end))
    assert sorted(by_key) == [str(i) for i in range(10)]
    assert sum(len(v) for v in by_key.values()) == 1000
    assert {key: max_overlap(v) for key, v in by_key.items()} == dict.fromkeys(by_key, 1)
    capped_runs = [(s, e) for kind, _, s, e in runs if kind == "capped"]
    assert len(capped_runs) == 100
    assert 1 < max_overlap(capped_runs) <= 3
    pids = {ln.split()[4] for ln in audit.read_text().splitlines()}
    assert len(pids) >= 2  # the work was shared, not done by one process


def rate_run(limits_app: tuple[App, dict[str, str], Path], tmp_path: Path, conn: psycopg.Connection[Any],
             *, jobs: int, rate: int, workers: int) -> tuple[list[float], float]:
    producer, env, audit = limits_app
    env = {**env, "LIMITS_RATE": f"{rate}/s"}
    paced = producer.tasks["limits.paced"]
    group = Processes(env, tmp_path)
    try:
        for _ in range(workers):
            group.start("--queues", "paced", "--concurrency", "4")
        # Jobs only once every worker has declared the limit and polls: the run measures the limit.
        wait_for(lambda: conn.execute(f'SELECT count(*) FROM "{producer.schema}".workers').fetchone()
                 == (workers,), timeout=60)
        paced.delay_many([paced.s(i) for i in range(jobs)])
        wait_for(lambda: states(conn, producer.schema).get("completed", 0) == jobs, timeout=jobs / rate * 3 + 30)
        assert group.stop() == [0] * workers, group.output()[-3000:]
    finally:
        group.stop()
        producer.close()
    starts = sorted(start for kind, _, start, _ in audit_lines(audit) if kind == "paced")
    return starts, starts[-1] - starts[0]


def max_in_any_window(starts: list[float], seconds: float = 1.0) -> int:
    best, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= seconds:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_a_rate_limit_holds_across_three_worker_processes(
        limits_app: tuple[App, dict[str, str], Path], tmp_path: Path, conn: psycopg.Connection[Any]) -> None:
    """120 jobs at 20/s (burst 2): no one-second window starts more than 22, and the run takes
    about 6 s: at least (120 - 2) / 20 s, and not much more."""
    starts, took = rate_run(limits_app, tmp_path, conn, jobs=120, rate=20, workers=3)
    assert len(starts) == 120
    assert max_in_any_window(starts) <= 20 + 2
    assert (120 - 2) / 20 - 0.1 <= took <= 20.0


@pytest.mark.slow
def test_600_jobs_at_10_per_second_across_three_workers_take_about_a_minute(
        limits_app: tuple[App, dict[str, str], Path], tmp_path: Path, conn: psycopg.Connection[Any]) -> None:
    starts, took = rate_run(limits_app, tmp_path, conn, jobs=600, rate=10, workers=3)
    assert len(starts) == 600
    assert max_in_any_window(starts) <= 10 + 1
    assert 59.8 <= took <= 75.0


def test_workflow_steps_carry_their_keys_and_a_key_unknown_at_enqueue_is_refused(
        app: App, conn: psycopg.Connection[Any]) -> None:
    lock = threading.Lock()
    running: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)

    @app.task(name="per_customer", queue="keyed", concurrency=Limit(max=1, key="customer"))
    def per_customer(customer: str, n: int) -> int:
        with lock:
            running[customer] += 1
            peak[customer] = max(peak[customer], running[customer])
        time.sleep(0.01)
        with lock:
            running[customer] -= 1
        return n

    @app.task(name="total", queue="keyed")
    def total(values: list[int]) -> int:
        return sum(values)

    ref = pgtasks.chord([per_customer.s(c, i) for i in range(4) for c in ("a", "b")], total.s()).delay()
    keys = conn.execute(f'SELECT limit_key FROM "{app.schema}".jobs WHERE workflow_id = %s ORDER BY workflow_step',
                        [ref.id]).fetchall()
    assert [k for (k,) in keys] == ['"a"', '"b"'] * 4 + [None]
    drain(app, queues=["keyed"], concurrency=8, poll_interval=0.05)
    assert ref.wait(timeout=10) == 2 * (0 + 1 + 2 + 3)
    assert dict(peak) == {"a": 1, "b": 1}

    with pytest.raises(ConfigurationError, match=r"has a per-key limit.*receives the previous step's result"):
        pgtasks.chain(total.s([1]), per_customer.s(2)).delay()
    with pytest.raises(ConfigurationError, match=r"enforced in its own queue 'keyed'"):
        pgtasks.group(per_customer.s("a", 1).set(queue="other")).delay()
    pgtasks.chain(total.s([1]), per_customer.si("a", 2)).delay()  # immutable: its key is known
