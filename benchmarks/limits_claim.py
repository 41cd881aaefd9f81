"""The claim under flow control (issue 14): what a limited claim costs against the plain one.

One throwaway schema holds one queue per variant, each with --jobs ready jobs:

  plain  no limit: the plain claim (Store.ajob_fetch_available, one statement);
  key    a task with concurrency=Limit(max=1, key="k") over --keys distinct keys;
  queue  app.queue(concurrency=50), a task without limits of its own;
  rate   a task with rate_limit="1000000/s" (a bucket of 100,000 tokens: it never binds).

The last three are claimed by the limited claim (Store.ajob_fetch_limited: a transaction of
limits_lock_queues and job_fetch_limited). Claims go through the Store as a worker makes them (its
task names as `tasks`), on pooler-safe connections. Each asks for a batch of --batches (10 and
100); the claimed jobs are then completed with job_set_outcome_many (untimed), so a key's place is
free again for the next claim, and as many jobs are enqueued again after each turn (untimed), so
every claim sees --jobs ready. A round runs --claims claims of every (variant, batch), in an order
that rotates each round; VACUUM ANALYZE of jobs before each round stands in for the autovacuum a
deployment runs. Figures: per round, the median microseconds of a claim call and the round's time
per claimed job; tables have the medians over rounds.

Then, on the same schema:
- statement cost: planning and execution time and buffers of each claim statement, from EXPLAIN
  (ANALYZE, BUFFERS, TIMING OFF) in rolled-back transactions (median of --explain-runs), and one
  full EXPLAIN (ANALYZE, BUFFERS) of job_fetch_limited of the key queue: its candidates are the
  first LIMITED_SCAN (500) entries of the queue's index, whatever its backlog;
- scan window: the key claim with other candidate windows (`scan=`), what widening would cost;
- concurrent claimers: --claimers connections claiming one queue at once; the limited claim's
  claimers take turns on the queue's lock, so this is its ceiling in claims a second;
- running elsewhere: both claims while R jobs of another, unlimited queue are running (the limited
  claim counts running jobs; the plain one never reads them);
- hot key: H jobs of one key at the head of a queue, then 1,000 jobs of other keys: what a claim
  of 10 finds, first with nothing running, then while the hot key's job runs.

    python benchmarks/limits_claim.py [--jobs 100000] [--keys 10000] [--rounds 5] [--claims 100]
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

from bench_common import base_parser, markdown_table
from psycopg import AsyncConnection, sql

from pgtasks import App, Limit
from pgtasks.client.task import Task
from pgtasks.core.models import ClaimedJob, Outcome
from pgtasks.ops import bench
from pgtasks.storage.limits import LIMITED_SCAN

WORKER_ID = "bench-limits:1"
QUEUE_CONCURRENCY = 50
NO_BIND_RATE = "1000000/s"
HOT_KEY = "hot"
HOT_OTHERS = 1000
CHUNK = 5000


def job_body(k: Any) -> None:
    return None


@dataclass
class Variant:
    name: str
    queue: str
    task: Task[..., None]
    limited: bool
    keys: int
    enqueued: int = 0

    def calls(self, n: int) -> list[tuple[Any, ...]]:
        """The next n jobs' arguments: keys 0, 1, ..., keys-1, 0, ... in enqueue order."""
        calls = [((self.enqueued + i) % self.keys,) for i in range(n)]
        self.enqueued += n
        return calls

    def enqueue(self, n: int) -> None:
        for offset in range(0, n, CHUNK):
            self.task.delay_many(self.calls(min(CHUNK, n - offset)))


@dataclass
class Bench:
    app: App
    tasks: list[str]  # what a worker passes: the task names it has registered

    async def claim(self, conn: AsyncConnection[Any], variant: Variant, batch: int,
                    scan: int = LIMITED_SCAN) -> tuple[float, list[ClaimedJob], bool]:
        """One claim as the worker makes it: seconds, the jobs, and whether ready jobs were left behind."""
        store = self.app.store
        started = time.perf_counter()
        if variant.limited:
            limited = await store.ajob_fetch_limited(conn, queues=[variant.queue], limit=batch, worker_id=WORKER_ID,
                                                     scan=scan, tasks=self.tasks)
            return time.perf_counter() - started, limited.jobs, limited.held
        jobs = await store.ajob_fetch_available(conn, queues=[variant.queue], limit=batch, worker_id=WORKER_ID,
                                                tasks=self.tasks)
        return time.perf_counter() - started, jobs, False

    async def complete(self, conn: AsyncConnection[Any], jobs: Sequence[ClaimedJob]) -> None:
        for offset in range(0, len(jobs), CHUNK):
            chunk = jobs[offset:offset + CHUNK]
            written = await self.app.store.ajob_set_outcome_many(conn, [Outcome.completed(j) for j in chunk])
            assert len(written) == len(chunk)

    def statement(self, variant: Variant, batch: int, scan: int = LIMITED_SCAN) -> tuple[LiteralString,
                                                                                       dict[str, Any]]:
        """The claim statement (the second one, for a limited claim) and its parameters."""
        params: dict[str, Any] = {"queues": [variant.queue], "limit": batch, "worker_id": WORKER_ID, "now": None,
                                  "tasks": self.tasks}
        if variant.limited:
            return self.app.store.queries["job_fetch_limited"], {**params, "scan": max(scan, batch)}
        return self.app.store.queries["job_fetch_available"], params

    async def explain(self, conn: AsyncConnection[Any], variant: Variant, batch: int, scan: int = LIMITED_SCAN, *,
                      options: LiteralString = "ANALYZE, BUFFERS") -> list[Any]:
        """EXPLAIN of one claim statement, after its queue's lock for a limited one, rolled back."""
        query, params = self.statement(variant, batch, scan)
        async with conn.transaction(force_rollback=True):
            if variant.limited:
                await conn.execute(self.app.store.queries["limits_lock_queues"], {"queues": [variant.queue]})
            cursor = await conn.execute("EXPLAIN (" + options + ") " + query, params)
            return [r[0] for r in await cursor.fetchall()]

    async def statement_cost(self, variant: Variant, batch: int, runs: int,
                             scan: int = LIMITED_SCAN) -> dict[str, Any]:
        """Median planning and execution ms and shared buffers of the claim statement over `runs`, on
        one connection (a new backend's first statements pay for filling its catalog caches)."""
        plans = []
        async with await self.app.aconnect() as conn:
            await self.explain(conn, variant, batch, scan)  # warm-up, not counted
            for _ in range(runs):
                rows = await self.explain(conn, variant, batch, scan,
                                          options="ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON")
                plans.append(rows[0][0])
        return {"plan_ms": round(statistics.median(p["Planning Time"] for p in plans), 2),
                "exec_ms": round(statistics.median(p["Execution Time"] for p in plans), 2),
                "buffers": round(statistics.median(p["Plan"]["Shared Hit Blocks"] + p["Plan"]["Shared Read Blocks"]
                                                   for p in plans))}

    def vacuum(self) -> None:
        with self.app.connect() as conn:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(self.app.schema, "jobs")))


def register(app: App, keys: int, hot_sizes: Sequence[int]) -> tuple[list[Variant], Variant, dict[int, Variant]]:
    """The variants' tasks, each in its own queue, plus the busy queue and the hot-key queues."""
    app.queue("bench_capped", concurrency=QUEUE_CONCURRENCY)
    plain = app.task(name="bench.plain", queue="bench_plain")(job_body)
    keyed = app.task(name="bench.keyed", queue="bench_keyed", concurrency=Limit(max=1, key="k"))(job_body)
    capped = app.task(name="bench.capped", queue="bench_capped")(job_body)
    paced = app.task(name="bench.paced", queue="bench_paced", rate_limit=NO_BIND_RATE)(job_body)
    busy = app.task(name="bench.busy", queue="bench_busy")(job_body)
    variants = [Variant("plain", "bench_plain", plain, False, keys), Variant("key", "bench_keyed", keyed, True, keys),
                Variant("queue", "bench_capped", capped, True, keys), Variant("rate", "bench_paced", paced, True, keys)]
    hot = {size: Variant(f"hot {size}", f"bench_hot_{size}",
                         app.task(name=f"bench.hot_{size}", queue=f"bench_hot_{size}",
                                  concurrency=Limit(max=1, key="k"))(job_body), True, keys)
           for size in hot_sizes}
    tasks = {t.name: (t.config.queue, t.config.limits) for t in app.tasks.values()}
    with app.connect() as conn:  # what a worker writes when it starts
        app.store.limits_declare(conn, app.registry.queue_limits, tasks)
    return variants, Variant("busy", "bench_busy", busy, False, keys), hot


@dataclass
class Turn:
    """--claims claims of one variant and batch in one round."""

    seconds: list[float]
    jobs: int

    @property
    def us_per_claim(self) -> float:
        return statistics.median(self.seconds) * 1e6

    @property
    def us_per_job(self) -> float:
        return sum(self.seconds) / max(self.jobs, 1) * 1e6


async def turn(b: Bench, conn: AsyncConnection[Any], variant: Variant, batch: int, claims: int,
               scan: int = LIMITED_SCAN) -> Turn:
    seconds: list[float] = []
    claimed = 0
    for _ in range(claims):
        took, jobs, _ = await b.claim(conn, variant, batch, scan)
        seconds.append(took)
        claimed += len(jobs)
        await b.complete(conn, jobs)
    variant.enqueue(claimed)  # back to --jobs ready
    return Turn(seconds, claimed)


def rotations(items: Sequence[Any], rounds: int) -> Iterator[list[Any]]:
    """The order of each round: A B C, then B C A, then C A B, ..."""
    for shift in range(rounds):
        k = shift % len(items)
        yield list(items[k:]) + list(items[:k])


def summarise(turns: dict[Any, list[Turn]], label: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key, done in turns.items():
        per_claim = [t.us_per_claim for t in done]
        claims = sum(len(t.seconds) for t in done)
        rows.append({**label(key), "us_per_claim": round(statistics.median(per_claim)),
                     "us_per_job": round(statistics.median(t.us_per_job for t in done), 1),
                     "jobs_per_claim": round(sum(t.jobs for t in done) / claims, 1),
                     "rounds_us_per_claim": [round(v) for v in per_claim]})
    return rows


def emit(workload: str, row: dict[str, Any]) -> None:
    print(json.dumps({"workload": workload, **row}), flush=True)


async def main_rounds(b: Bench, variants: list[Variant], batches: list[int], rounds: int,
                      claims: int, explain_runs: int) -> list[dict[str, Any]]:
    cases = [(v, n) for v in variants for n in batches]
    turns: dict[tuple[str, int], list[Turn]] = {(v.name, n): [] for v, n in cases}
    async with await b.app.aconnect() as conn:
        for order in rotations(cases, rounds):
            b.vacuum()
            for variant, batch in order:
                turns[(variant.name, batch)].append(await turn(b, conn, variant, batch, claims))
    rows = summarise(turns, lambda key: {"variant": key[0], "batch": key[1]})
    plain = {r["batch"]: r for r in rows if r["variant"] == "plain"}
    b.vacuum()
    for row, (variant, batch) in zip(rows, cases, strict=True):
        row["x_plain"] = round(row["us_per_claim"] / plain[row["batch"]]["us_per_claim"], 2)
        row.update(await b.statement_cost(variant, batch, explain_runs))
        emit("limits_claim", row)
    return rows


async def scan_windows(b: Bench, variant: Variant, scans: list[int], rounds: int, claims: int,
                       explain_runs: int) -> list[dict[str, Any]]:
    turns: dict[int, list[Turn]] = {s: [] for s in scans}
    async with await b.app.aconnect() as conn:
        for order in rotations(scans, rounds):
            for scan in order:
                turns[scan].append(await turn(b, conn, variant, 10, claims, scan))
    rows = summarise(turns, lambda scan: {"variant": variant.name, "batch": 10, "scan": scan})
    b.vacuum()
    for row in rows:
        row.update(await b.statement_cost(variant, 10, explain_runs, row["scan"]))
        emit("limits_claim_scan", row)
    return rows


async def claimers(b: Bench, variant: Variant, n: int, claims: int) -> tuple[float, int]:
    """`n` connections claiming `variant` at once, `claims` claims of 10 each: seconds, jobs."""
    conns = [await b.app.aconnect() for _ in range(n)]
    try:
        async def one(conn: AsyncConnection[Any]) -> int:
            claimed = 0
            for _ in range(claims):
                _, jobs, _ = await b.claim(conn, variant, 10)
                claimed += len(jobs)
                await b.complete(conn, jobs)
            return claimed

        started = time.perf_counter()
        jobs = sum(await asyncio.gather(*(one(c) for c in conns)))
        seconds = time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
    variant.enqueue(jobs)
    return seconds, jobs


async def concurrent(b: Bench, variants: list[Variant], levels: list[int], rounds: int,
                     claims: int) -> list[dict[str, Any]]:
    cases = [(v, n) for n in levels for v in variants]
    results: dict[tuple[str, int], list[tuple[float, int]]] = {(v.name, n): [] for v, n in cases}
    for order in rotations(cases, rounds):
        b.vacuum()
        for variant, n in order:
            results[(variant.name, n)].append(await claimers(b, variant, n, claims))
    rows = []
    for (name, n), runs in results.items():
        row = {"variant": name, "claimers": n, "batch": 10,
               "claims_per_s": round(statistics.median(n * claims / s for s, _ in runs)),
               "jobs_per_s": round(statistics.median(j / s for s, j in runs)),
               "rounds_claims_per_s": [round(n * claims / s) for s, _ in runs]}
        emit("limits_claim_concurrent", row)
        rows.append(row)
    return rows


async def running_elsewhere(b: Bench, variants: list[Variant], busy: Variant, levels: list[int], rounds: int,
                            claims: int, explain_runs: int) -> list[dict[str, Any]]:
    """Both claims at batch 10 while `level` jobs of the busy queue are running (claimed, never finished)."""
    rows: list[dict[str, Any]] = []
    running: list[ClaimedJob] = []
    async with await b.app.aconnect() as conn:
        for level in sorted(levels):
            busy.enqueue(level - len(running))
            while len(running) < level:
                _, jobs, _ = await b.claim(conn, busy, min(CHUNK, level - len(running)))
                running += jobs
            b.vacuum()
            turns: dict[str, list[Turn]] = {v.name: [] for v in variants}
            for order in rotations(variants, rounds):
                for variant in order:
                    turns[variant.name].append(await turn(b, conn, variant, 10, claims))

            def label(name: str, level: int = level) -> dict[str, Any]:
                return {"running_elsewhere": level, "variant": name, "batch": 10}

            b.vacuum()
            for row, variant in zip(summarise(turns, label), variants, strict=True):
                row.update(await b.statement_cost(variant, 10, explain_runs))
                emit("limits_claim_running", row)
                rows.append(row)
        await b.complete(conn, running)
    return rows


async def hot_key(b: Bench, hot: dict[int, Variant]) -> list[dict[str, Any]]:
    """H jobs of one key ahead of HOT_OTHERS jobs of other keys: what a claim of 10 finds."""
    rows = []
    async with await b.app.aconnect() as conn:
        for size, variant in hot.items():
            variant.task.delay_many([(HOT_KEY,)] * size)
            variant.enqueue(HOT_OTHERS)
            _, first, _ = await b.claim(conn, variant, 10)
            hot_running = [j for j in first if json.loads(j.args)["k"] == HOT_KEY]
            await b.complete(conn, [j for j in first if j.id not in {h.id for h in hot_running}])
            _, second, held = await b.claim(conn, variant, 10)  # the hot key's job is still running
            await b.complete(conn, [*hot_running, *second])
            row = {"hot_jobs_ahead": size, "others_behind": HOT_OTHERS, "scan": LIMITED_SCAN,
                   "first_claim_hot": len(hot_running), "first_claim_others": len(first) - len(hot_running),
                   "second_claim_others": sum(json.loads(j.args)["k"] != HOT_KEY for j in second),
                   "second_claim_held": held}
            emit("limits_claim_hot_key", row)
            rows.append(row)
    return rows


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


async def run(args: Any) -> None:
    with bench.throwaway_app(args.database_url) as app:
        variants, busy, hot = register(app, args.keys, ints(args.hot))
        b = Bench(app, sorted(app.tasks))
        for variant in variants:
            variant.enqueue(args.jobs)
        print(f"# schema {app.schema}: {len(variants)} queues of {args.jobs:,} ready jobs, {args.keys:,} keys",
              flush=True)
        batches = ints(args.batches)
        main_rows = await main_rounds(b, variants, batches, args.rounds, args.claims, args.explain_runs)
        plain, keyed = variants[0], variants[1]
        async with await app.aconnect() as conn:
            await b.explain(conn, keyed, batches[0])  # warm-up
            plan = "\n".join(str(line) for line in await b.explain(conn, keyed, batches[0]))
        scan_rows = await scan_windows(b, keyed, ints(args.scans), args.rounds, args.claims, args.explain_runs)
        concurrent_rows = await concurrent(b, [plain, keyed], ints(args.claimers), args.rounds, args.claims)
        running_rows = await running_elsewhere(b, [plain, keyed], busy, ints(args.running), args.rounds,
                                               args.claims, args.explain_runs)
        hot_rows = await hot_key(b, hot)
    cost = ["plan_ms", "exec_ms", "buffers"]
    print(f"\n## Claim cost, {args.jobs:,} ready jobs per queue ({args.rounds} rounds x {args.claims} claims; "
          f"medians over rounds; plan/exec/buffers: the claim statement, median of {args.explain_runs} EXPLAINs)\n")
    print(markdown_table(main_rows, ["variant", "batch", "us_per_claim", "us_per_job", "jobs_per_claim", "x_plain",
                                     *cost, "rounds_us_per_claim"]))
    print(f"\n## EXPLAIN (ANALYZE, BUFFERS) of job_fetch_limited, queue {keyed.queue}, batch {batches[0]}\n")
    print(plan)
    print("\n## The key claim with other candidate windows (batch 10)\n")
    print(markdown_table(scan_rows, ["scan", "us_per_claim", "us_per_job", "jobs_per_claim", *cost,
                                     "rounds_us_per_claim"]))
    print("\n## Claimers of one queue at once (batch 10)\n")
    print(markdown_table(concurrent_rows, ["claimers", "variant", "claims_per_s", "jobs_per_s",
                                           "rounds_claims_per_s"]))
    print("\n## With jobs of another queue running (batch 10)\n")
    print(markdown_table(running_rows, ["running_elsewhere", "variant", "us_per_claim", "us_per_job", *cost,
                                        "rounds_us_per_claim"]))
    print(f"\n## One hot key at the head of a queue (claims of 10, candidate window {LIMITED_SCAN})\n")
    print(markdown_table(hot_rows, ["hot_jobs_ahead", "others_behind", "first_claim_hot", "first_claim_others",
                                    "second_claim_others", "second_claim_held"]))


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=100_000, help="ready jobs in each variant's queue")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct keys of the per-key limited task")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--claims", type=int, default=100, help="claims of each variant and batch in a round")
    parser.add_argument("--batches", default="10,100", help="jobs asked for per claim, comma-separated")
    parser.add_argument("--explain-runs", type=int, default=20, help="EXPLAINs per statement-cost figure")
    parser.add_argument("--scans", default=f"100,{LIMITED_SCAN},2000,5000",
                        help="candidate windows for the key claim, comma-separated")
    parser.add_argument("--claimers", default="1,4", help="connections claiming one queue at once, comma-separated")
    parser.add_argument("--running", default="0,1000,10000",
                        help="jobs running in another queue, comma-separated")
    parser.add_argument("--hot", default="1000,495,100", help="jobs of the hot key ahead of the others")
    args = parser.parse_args(argv)
    logging.getLogger("pgtasks").setLevel(logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
