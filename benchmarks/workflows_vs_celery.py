"""Workflow benchmark: a 10,000-member chord and a 1,000-step chain of no-op tasks, end to end,
and a plain drain of 10,000 no-op jobs for reference; pgtasks against Celery with Redis, in one run.

Each workload runs on a fresh schema (pgtasks) or a fresh queue and key prefix (Celery), with
one worker already started and warm (a job run end to end) before the clock starts. The clock
starts at the call that enqueues (the canvas is built before it) and stops when the last piece of
work is done: the callback's outcome written (pgtasks, jobs.finalized_at) or the end of its body
(Celery, time.time() in the task); the client and the worker run on one host, so one clock.

- chord: chord([member.s(i) for i in range(N)], total.s()); `total` checks it got range(N).
- chain: step.s(0) | step.s() | ... (N steps, each returning its input + 1); the result is N.
- drain: N plain jobs of the same `member` task, enqueued at once (pgtasks: one delay_many(),
  a COPY; Celery: apply_async() in a pipelined kombu batch), until the last one is done.

The rounds alternate which library goes first (A/B, B/A, ...), because the machine is shared and
its speed drifts; the figures are the medians of the rounds. Both workers run one process at
the same --concurrency (pgtasks: threads for these sync tasks; Celery: --celery-pool, prefork
processes by default) at log level WARNING. See benchmarks/peers/celery_canvas_bench.py for how
Celery is configured and measured, and docs/performance.md for the figures.

The pgtasks worker loads this module's workflow_app(): `--app workflows_vs_celery:workflow_app`, with this
directory on PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, LiteralString

from bench_common import base_parser, throwaway_app
from psycopg import sql

from pgtasks import App, chain, chord
from pgtasks.client.task import Task
from pgtasks.core.errors import BenchmarkError
from pgtasks.ops import bench

HERE = Path(__file__).resolve().parent
MEMBER, TOTAL, STEP, WARM = "wfbench.member", "wfbench.total", "wfbench.step", "wfbench.warm"
WORKLOADS = ("chord", "chain", "drain")
Row = dict[str, Any]


def workflow_app(database_url: str | None = None, *, schema: str | None = None) -> App:
    """The App of the benchmark's tasks: the same code in the worker and in this script."""
    app = App(database_url, schema=schema, application_name="pgtasks-wfbench")

    @app.task(name=MEMBER)
    def member(index: int) -> int:
        return index

    @app.task(name=TOTAL)
    def total(values: list[int], expected: int) -> int:
        if values != list(range(expected)):
            raise ValueError(f"the callback got {len(values)} values, not range({expected}) in order")
        return len(values)

    @app.task(name=STEP)
    def step(value: int) -> int:
        return value + 1

    @app.task(name=WARM)
    def warm() -> None:
        return None

    return app


def task(app: App, name: str) -> Task[..., Any]:
    found = app.tasks[name]
    if not isinstance(found, Task):
        raise BenchmarkError(f"{name} is not a task of the workflow bench app")
    return found


@contextlib.contextmanager
def throwaway(dsn: str) -> Iterator[App]:
    """A workflow bench App on a fresh, migrated pgtasks_bench_* schema, dropped on exit."""
    with throwaway_app(workflow_app, dsn) as app:
        yield app


class Worker(bench.WorkerProcess):
    """`pgtasks worker` on this module's App (bench.WorkerProcess runs the bench app's)."""

    def __init__(self, app: App, concurrency: int) -> None:
        super().__init__(app, concurrency=concurrency, log_level="WARNING")
        self.command = [sys.executable, "-c", "from pgtasks.cli import main; main()", "--app",
                        "workflows_vs_celery:workflow_app", "worker", "--log-level", "warning", "--concurrency",
                        str(concurrency)]
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), self.env.get("PYTHONPATH")) if p)


@contextlib.contextmanager
def warm_worker(app: App, concurrency: int) -> Iterator[Worker]:
    """A worker that has started and run one job end to end; stopped (SIGTERM) on exit."""
    worker = Worker(app, concurrency)
    with worker:
        ref = task(app, WARM).delay()
        bench.wait_until(lambda: ref.state() == "completed", timeout=120, worker=worker, what="the warm-up job")
        yield worker
        worker.stop()


def epoch(app: App, query: LiteralString, *params: Any) -> float:
    with app.connect() as conn:
        row = conn.execute(sql.SQL(query).format(jobs=sql.Identifier(app.schema, "jobs")), params).fetchone()
    if row is None or row[0] is None:
        raise BenchmarkError(f"no time found by {query!r}")
    return float(row[0])


def result(workload: str, size: int, seconds: float, enqueued: float, concurrency: int, **details: Any) -> Row:
    return {"library": "pgtasks", "workload": workload, "jobs": size, "seconds": round(seconds, 4),
            "rate": round(size / seconds, 1), "enqueue_seconds": round(enqueued, 4),
            "us_per_job": round(seconds / size * 1e6, 1), "concurrency": concurrency, **details}


def pgtasks_chord(dsn: str, size: int, concurrency: int) -> Row:
    with throwaway(dsn) as app, warm_worker(app, concurrency):
        canvas = chord([task(app, MEMBER).s(i) for i in range(size)], task(app, TOTAL).s(expected=size))
        started = time.time()
        ref = canvas.delay()
        enqueued = time.time() - started
        if ref.wait(timeout=1800) != size:
            raise BenchmarkError("the chord's callback returned a wrong count")
        callback = ref.job_ids[-1]
        done = epoch(app, "SELECT extract(epoch FROM finalized_at) FROM {jobs} WHERE id = %s", callback)
        members_done = epoch(app, "SELECT extract(epoch FROM max(finalized_at)) FROM {jobs} "
                                  "WHERE workflow_id = %s AND id <> %s", ref.id, callback)
    return result("chord", size, done - started, enqueued, concurrency,
                  callback_after_last_member_ms=round((done - members_done) * 1000, 1))


def pgtasks_chain(dsn: str, size: int, concurrency: int) -> Row:
    with throwaway(dsn) as app, warm_worker(app, concurrency):
        step = task(app, STEP)
        canvas = chain(step.s(0), *(step.s() for _ in range(size - 1)))
        started = time.time()
        ref = canvas.delay()
        enqueued = time.time() - started
        if ref.wait(timeout=1800) != size:
            raise BenchmarkError("the chain's last step returned a wrong value")
        done = epoch(app, "SELECT extract(epoch FROM finalized_at) FROM {jobs} WHERE id = %s", ref.job_ids[-1])
    return result("chain", size, done - started, enqueued, concurrency)


def pgtasks_drain(dsn: str, size: int, concurrency: int) -> Row:
    from pgtasks.storage.bench import BenchStore

    with throwaway(dsn) as app, warm_worker(app, concurrency) as worker:
        member = task(app, MEMBER)
        calls = [(i,) for i in range(size)]
        started = time.time()
        member.delay_many(calls)
        enqueued = time.time() - started
        store = BenchStore(app.schema)

        def all_done() -> bool:
            with app.connect() as conn:
                return store.count_completed(conn, MEMBER) == size

        bench.wait_until(all_done, timeout=1800, worker=worker, what=f"{size} jobs", interval=0.05)
        done = epoch(app, "SELECT extract(epoch FROM max(finalized_at)) FROM {jobs} WHERE task = %s", MEMBER)
    return result("drain", size, done - started, enqueued, concurrency)


def run_celery(python: Path, workload: str, size: int, args: Any) -> Row:
    script = HERE / "peers" / "celery_canvas_bench.py"
    command = [str(python), str(script), workload, "--size", str(size), "--concurrency", str(args.concurrency),
               "--pool", args.celery_pool, "--prefetch-multiplier", str(args.prefetch_multiplier),
               "--publish", "batch" if workload == "drain" else args.celery_chord_publish]
    out = subprocess.run(command, capture_output=True, text=True, check=False, cwd=script.parent)
    if out.returncode != 0:
        raise SystemExit(f"celery {workload} failed:\n{out.stdout}\n{out.stderr[-4000:]}")
    row: Row = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def summarize(rows: list[Row]) -> dict[str, Any]:
    """Medians per (workload, library), and two medians of ratios taken within each round (so a
    drift of the machine's speed between rounds cancels): pgtasks' time over Celery's, and each
    library's time per member or step over its time per plain job."""
    grouped: dict[tuple[str, str], list[Row]] = defaultdict(list)
    by_round: dict[tuple[str, str, int], Row] = {}
    for row in rows:
        grouped[(row["workload"], row["library"])].append(row)
        by_round[(row["workload"], row["library"], row["round"])] = row
    medians: dict[str, dict[str, Row]] = defaultdict(dict)
    for (workload, library), runs in grouped.items():
        medians[workload][library] = {
            "seconds": statistics.median(r["seconds"] for r in runs),
            "enqueue_seconds": statistics.median(r["enqueue_seconds"] for r in runs),
            "us_per_job": statistics.median(r["us_per_job"] for r in runs),
            "jobs": runs[0]["jobs"], "runs": [r["seconds"] for r in runs]}
    rounds = sorted({row["round"] for row in rows})
    libraries = sorted({row["library"] for row in rows})

    def paired(top: tuple[str, str], bottom: tuple[str, str], key: str) -> float | None:
        ratios = [by_round[(*top, n)][key] / by_round[(*bottom, n)][key] for n in rounds
                  if (*top, n) in by_round and (*bottom, n) in by_round]
        return round(statistics.median(ratios), 3) if ratios else None

    versus = {w: paired((w, "pgtasks"), (w, "celery"), "seconds") for w in WORKLOADS}
    per_plain = {lib: {w: paired((w, lib), ("drain", lib), "us_per_job") for w in ("chord", "chain")}
                 for lib in libraries}
    return {"medians": medians, "pgtasks_over_celery": versus, "per_member_over_plain": per_plain}


def markdown(summary: dict[str, Any], libraries: list[str]) -> str:
    names = {"chord": "chord, {n:,} members", "chain": "chain, {n:,} steps", "drain": "plain drain, {n:,} jobs"}
    both = len(libraries) == 2
    lines = ["| workload | " + " | ".join(f"{lib}: end to end (s) / enqueue (s) / us per member" for lib in libraries)
             + (" | pgtasks / Celery time |" if both else " |"),
             "|---|" + "---|" * len(libraries) + ("---|" if both else "")]
    for workload in WORKLOADS:
        by_library = summary["medians"].get(workload)
        if not by_library:
            continue
        size = next(iter(by_library.values()))["jobs"]
        cells = []
        for lib in libraries:
            row = by_library.get(lib)
            cells.append(f"{row['seconds']:.2f} / {row['enqueue_seconds']:.2f} / {row['us_per_job']:,.0f}"
                         if row else "")
        line = f"| {names[workload].format(n=size)} | " + " | ".join(cells) + " |"
        if both:
            ratio = summary["pgtasks_over_celery"].get(workload)
            line += f" {ratio:.2f} |" if ratio is not None else " |"
        lines.append(line)
    lines += ["", "| time per member or step / time per plain job | " + " | ".join(libraries) + " |",
              "|---|" + "---|" * len(libraries)]
    for workload in ("chord", "chain"):
        cells = [summary["per_member_over_plain"].get(lib, {}).get(workload) for lib in libraries]
        lines.append(f"| {workload} | " + " | ".join(f"{c:.2f}" if c is not None else "" for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.set_defaults(repeat=3)
    parser.add_argument("--members", type=int, default=10_000, help="chord members")
    parser.add_argument("--steps", type=int, default=1000, help="chain steps")
    parser.add_argument("--jobs", type=int, default=10_000, help="plain jobs drained")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--concurrency", type=int, default=10, help="worker concurrency, both libraries")
    parser.add_argument("--peers", default="celery", help="'celery' or '' (pgtasks alone)")
    parser.add_argument("--venv", default="/tmp/pgtasks-peers-venv", help="the peers' venv (made if missing)")
    parser.add_argument("--celery-pool", choices=("prefork", "threads"), default="prefork")
    parser.add_argument("--prefetch-multiplier", type=int, default=64, help="Celery's worker_prefetch_multiplier")
    parser.add_argument("--celery-chord-publish", choices=("plain", "batch"), default="plain",
                        help="publish the chord header message by message (Celery's way), or in a kombu batch")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table at the end")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    sizes = {"chord": args.members, "chain": args.steps, "drain": args.jobs}
    libraries = ["pgtasks"]
    python: Path | None = None
    if args.peers == "celery":
        from compare import ensure_venv

        versions, pythons = ensure_venv(Path(args.venv), ["celery"])
        python = pythons["celery"]
        libraries.append("celery")
        print(json.dumps({"workload": "machine", "cpus": os.cpu_count(), **versions}), flush=True)
    elif args.peers:
        parser.error("--peers: only 'celery' (or '') is supported")
    ours = {"chord": pgtasks_chord, "chain": pgtasks_chain, "drain": pgtasks_drain}
    rows: list[Row] = []
    for round_ in range(max(1, args.repeat)):
        for workload in workloads:
            order = libraries if round_ % 2 == 0 else libraries[::-1]
            for library in order:
                if library == "pgtasks":
                    row = ours[workload](args.database_url, sizes[workload], args.concurrency)
                else:
                    assert python is not None
                    row = run_celery(python, workload, sizes[workload], args)
                row["round"] = round_ + 1
                print(json.dumps(row), flush=True)
                rows.append(row)
    summary = summarize(rows)
    print(json.dumps({"workload": "summary", **summary}), flush=True)
    if args.markdown:
        print(markdown(summary, libraries))


if __name__ == "__main__":
    main()
