"""pgtasks side by side with its peers: the same workloads, measured the same way, in one run, as ratios.

Workloads (--workloads): enqueue (one job per transaction, each carrying an argument), bulk_1000 and
bulk_5000 (bulk enqueue through each library's public bulk call, 1,000 or 5,000 jobs per call),
drain (50,000 queued no-op jobs, async handler, each library's default settings), drain_sync (the
same with a sync handler on a thread), drain_c10 (async, concurrency 10) and idle_latency.
Every drain is timed from outside the library (peers/peer_common.py DrainClock: a separate
connection counting the jobs not finished yet, first completion to last), with each library's own
timestamps beside it; start latency runs from the enqueuing client's clock to the task's first line
(StampFile). pgtasks and its workers log at INFO, as pgqueuer's do.

Peers: pgqueuer, procrastinate and oban (on PostgreSQL), and celery (Celery with the Redis broker,
which needs Redis running; see benchmarks/peers/celery_bench.py). Makes (once) a separate venv
with the peers asked for (default /tmp/pgtasks-peers-venv; the versions pinned in PEERS when the
index has them, else the latest; oban needs Python 3.12+, so it gets a venv of its own beside it,
made with --newer-python or a python3.12+ found on PATH or under ~/.pyenv), then for each repeat
runs every workload on pgtasks and on each peer (benchmarks/peers/*_bench.py), interleaved so that
noise from a shared machine hits all of them alike. Prints one JSON line per measurement, then the
medians, the ratios pgtasks/peer, and (with --markdown) a table for docs/performance.md.
--ceiling also runs benchmarks/pgbench_ceiling.py's measurements in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from bench_common import base_parser

import pgtasks
from pgtasks.app import App
from pgtasks.ops import bench
from pgtasks.storage.bench import BenchStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
from peer_common import DrainClock, StampFile  # noqa: E402 - stdlib + psycopg, shared with the peers


@dataclass(frozen=True)
class Peer:
    """A peer library: what to pip install in its venv, and the Python it needs."""

    package: str
    version: str
    extra: str = ""  # a pip extra installed with it, e.g. "redis" for celery[redis]
    also_report: tuple[str, ...] = ()  # other installed packages whose versions go in the machine line
    python: tuple[int, int] | None = None  # the oldest Python it installs on, when newer than ours

    def requirement(self, *, pinned: bool) -> str:
        name = f"{self.package}[{self.extra}]" if self.extra else self.package
        return f"{name}=={self.version}" if pinned else name


PEERS = {
    # Its asyncpg extra: pgqueuer's docs run it on asyncpg (and on uvloop, a dependency on Linux).
    "pgqueuer": Peer("pgqueuer", "1.6.0", extra="asyncpg", also_report=("asyncpg", "uvloop")),
    "procrastinate": Peer("procrastinate", "3.10.0"),
    # The redis extra brings the redis client at the version kombu supports; the broker is Redis.
    "celery": Peer("celery", "5.7.0", extra="redis", also_report=("redis", "kombu")),
    # Every oban release on the index (0.5.0 to 0.7.0) requires Python 3.12 or newer.
    "oban": Peer("oban", "0.7.0", python=(3, 12)),
}
THROUGHPUT = ("enqueue", "bulk_1000", "bulk_5000", "drain", "drain_sync", "drain_c10")
WORKLOADS = (*THROUGHPUT, "idle_latency")
SLOW_DRAIN = ("procrastinate",)  # peers drained with --slow-drain-jobs
# Peers measured with the shared clocks (DrainClock, StampFile) and given --task; the others keep
# their own scripts' measures (database timestamps), and run no drain_sync.
SAME_CLOCKS = ("pgqueuer",)
Row = dict[str, Any]


def ensure_venv(venv: Path, peers: list[str],
                newer_python: str | None = None) -> tuple[dict[str, str], dict[str, Path]]:
    """Create the peers' venvs if needed and install the pinned peers (falling back to the latest).

    Returns the versions installed (for the machine line) and each peer's venv python. Peers that
    need a newer Python than this one get their own venv, `<venv>-py3.N`, made with that Python.
    """
    versions: dict[str, str] = {}
    pythons: dict[str, Path] = {}
    for name in peers:
        peer = PEERS[name]
        base = sys.executable
        where = venv
        if peer.python is not None and sys.version_info[:2] < peer.python:
            base = _newer_python(peer.python, newer_python)
            found_version = _python_version(base)
            where = venv.with_name(f"{venv.name}-py{found_version[0]}.{found_version[1]}")
            versions[f"{name}_python"] = ".".join(map(str, found_version))
        python = where / "bin" / "python"
        if not python.exists():
            subprocess.run([base, "-m", "venv", str(where)], check=True)
        wanted = (peer.package, *peer.also_report)
        found = {package: _installed_version(python, package) for package in wanted}
        if None in found.values():
            done = subprocess.run([str(python), "-m", "pip", "install", "-q", peer.requirement(pinned=True),
                                   "psycopg[binary]"], check=False)
            if done.returncode != 0:
                print(f"{peer.requirement(pinned=True)} is not available; installing the latest", file=sys.stderr)
                subprocess.run([str(python), "-m", "pip", "install", "-q", peer.requirement(pinned=False),
                                "psycopg[binary]"], check=True)
            found = {package: _installed_version(python, package) for package in wanted}
        for package, version in found.items():
            versions[package] = version or "?"
        pythons[name] = python
    return versions, pythons


def _installed_version(python: Path, package: str) -> str | None:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def _python_version(python: str) -> tuple[int, int]:
    out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                         text=True, check=True)
    major, minor = out.stdout.split()
    return int(major), int(minor)


def _newer_python(oldest: tuple[int, int], given: str | None) -> str:
    """A Python at least `oldest`: `given`, else python3.N on PATH, else one under ~/.pyenv/versions."""
    if given is not None:
        if _python_version(given) < oldest:
            raise SystemExit(f"--newer-python {given} is older than {oldest[0]}.{oldest[1]}")
        return given
    candidates: list[str] = []
    for minor in range(oldest[1], oldest[1] + 10):
        found = shutil.which(f"python{oldest[0]}.{minor}")
        if found:
            candidates.append(found)
    pyenv = Path.home() / ".pyenv" / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / "python") for p in sorted(pyenv.iterdir()) if (p / "bin" / "python").exists()]
    usable = []
    for candidate in candidates:
        try:
            version = _python_version(candidate)
        except (OSError, subprocess.CalledProcessError, ValueError):
            continue
        if version >= oldest:
            usable.append((version, candidate))
    if not usable:
        raise SystemExit(f"no Python {oldest[0]}.{oldest[1]}+ found (on PATH or under {pyenv}); "
                         "pass one with --newer-python")
    return min(usable)[1]  # the oldest that will do: the closest to the Python pgtasks runs on


def run_peer(python: Path, library: str, dsn: str, args: list[str], options: Sequence[str] = ()) -> Row:
    script = HERE / "peers" / f"{library}_bench.py"
    out = subprocess.run([str(python), str(script), "--database-url", dsn, *options, *args], capture_output=True,
                         text=True, check=False, cwd=script.parent)
    if out.returncode != 0:
        raise SystemExit(f"{library} {' '.join(args)} failed:\n{out.stdout}\n{out.stderr[-4000:]}")
    row: Row = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def run_pgtasks(dsn: str, workload: str, sizes: dict[str, int]) -> Row:
    with bench.throwaway_app(dsn) as app:
        if workload == "enqueue":
            return pgtasks_enqueue(app, sizes["enqueue"])
        if workload.startswith("bulk_"):
            return pgtasks_bulk(app, sizes["bulk"], int(workload.removeprefix("bulk_")))
        if workload == "idle_latency":
            return pgtasks_latency(app, sizes["latency"])
        task = bench.NOOP_TASK if workload == "drain_sync" else bench.ASYNC_NOOP_TASK
        concurrency = 10 if workload == "drain_c10" else None
        return pgtasks_drain(app, sizes["drain"], workload, task, concurrency)


def pgtasks_enqueue(app: App, jobs: int) -> Row:
    """`task.delay(n=i)`, each its own transaction on the app's pool (bench.enqueue_single)."""
    return bench.enqueue_single(app, jobs, with_args=True).as_dict() | {"workload": "enqueue"}


def pgtasks_bulk(app: App, jobs: int, chunk: int) -> Row:
    """`task.delay_many([task.s(n=i) ...])`, `chunk` signatures per call (bench.enqueue_bulk)."""
    return bench.enqueue_bulk(app, jobs, chunk=chunk, with_args=True).as_dict() | {"workload": f"bulk_{chunk}"}


def pgtasks_drain(app: App, jobs: int, workload: str, task: str, concurrency: int | None) -> Row:
    """bench.drain() (a `pgtasks worker --burst` subprocess), timed from outside by a DrainClock."""
    store = BenchStore(app.schema)
    with app.connect() as conn:
        clock = DrainClock(lambda: store.count_unfinished(conn), jobs)

        def start_clock(worker: bench.WorkerProcess) -> None:
            clock.start()  # the jobs are queued and the worker is starting: nothing has completed yet

        try:
            result = bench.drain(app, jobs, concurrency=concurrency, workload=workload, task_name=task,
                                 on_start=start_clock)
            seconds = clock.seconds()
        finally:
            clock.abort()
    details = {**result.details, "own_timestamps_seconds": round(result.seconds, 4),
               "own_timestamps_rate": round(result.rate, 1), "clock": "outside"}
    return bench.Result(workload, jobs, seconds, jobs / seconds, details=details).as_dict()


def pgtasks_latency(app: App, jobs: int, interval: float = 0.02) -> Row:
    """An idle `pgtasks worker`; `task.delay(n=i)` every `interval` s; client clock to the task's first line."""
    task = bench.noop_task(app, bench.STAMP_TASK)
    stamps = StampFile()
    try:
        worker = bench.WorkerProcess(app)
        worker.env[bench.STAMP_FILE_ENV] = str(stamps.path)
        with worker:
            task.delay(n=-1)  # warm-up job, left out
            bench.wait_until(lambda: stamps.stamped() >= 1, timeout=60.0, worker=worker, what="the warm-up job")
            started = time.perf_counter()
            for n in range(jobs):
                stamps.mark(n)
                task.delay(n=n)
                pause = started + (n + 1) * interval - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            seconds = time.perf_counter() - started
            bench.wait_until(lambda: stamps.stamped() >= jobs + 1, timeout=120.0, worker=worker, what="all jobs")
            worker.stop()
        latencies = stamps.latencies_ms()
    finally:
        stamps.close()
    details = {"listen": True, "clock": "client to task", "interval_ms": round(interval * 1000, 1),
               **bench.percentiles(latencies)}
    return bench.Result("idle_latency", jobs, seconds, jobs / seconds, details=details).as_dict()


def peer_args(workload: str, sizes: dict[str, int], library: str, slow_drain: int) -> list[str] | None:
    """The peer script's command line for a workload, or None when the peer does not run it."""
    drain_jobs = slow_drain if library in SLOW_DRAIN else sizes["drain"]
    same_clocks = library in SAME_CLOCKS
    if workload == "enqueue":
        return ["enqueue", "--jobs", str(sizes["enqueue"])]
    if workload.startswith("bulk_"):
        return ["bulk", "--jobs", str(sizes["bulk"]), "--chunk", workload.removeprefix("bulk_")]
    if workload in ("drain", "drain_sync"):
        if not same_clocks:
            return ["drain", "--jobs", str(drain_jobs)] if workload == "drain" else None
        return ["drain", "--jobs", str(drain_jobs), "--task", "sync" if workload == "drain_sync" else "async"]
    if workload == "drain_c10":
        task = ["--task", "async"] if same_clocks else []
        return ["drain", "--jobs", str(drain_jobs), "--concurrency", "10", *task]
    return ["latency", "--jobs", str(sizes["latency"])]


def machine(dsn: str, versions: dict[str, str]) -> Row:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT version(), current_setting('synchronous_commit'), "
                           "current_setting('shared_buffers')").fetchone()
    cpu = "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"workload": "machine", "cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "postgres": row[0] if row else "?", "synchronous_commit": row[1] if row else "?",
            "shared_buffers": row[2] if row else "?", "pgtasks": pgtasks.__version__, **versions}


def summarize(rows: list[Row], libraries: list[str]) -> dict[str, dict[str, Row]]:
    """Median per (workload, library): rate for throughput, each percentile for latency."""
    grouped: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        grouped[(row["workload"], row["library"])].append(row)
    summary: dict[str, dict[str, Row]] = defaultdict(dict)
    for (workload, library), group in grouped.items():
        if workload == "idle_latency":
            summary[workload][library] = {k: statistics.median(float(r[k]) for r in group)
                                          for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")}
        else:
            summary[workload][library] = {"rate": statistics.median(float(r["rate"]) for r in group),
                                          "runs": [r["rate"] for r in group]}
    return summary


def ratios(summary: dict[str, dict[str, Row]], peers: list[str]) -> list[Row]:
    out: list[Row] = []
    for workload, by_library in summary.items():
        if "pgtasks" not in by_library:
            continue
        mine = by_library["pgtasks"]
        for peer in peers:
            if peer not in by_library:
                continue
            theirs = by_library[peer]
            if workload == "idle_latency":
                out.append({"workload": workload, "peer": peer,
                            "p50_ratio": round(mine["p50_ms"] / theirs["p50_ms"], 3),
                            "p99_ratio": round(mine["p99_ms"] / theirs["p99_ms"], 3),
                            "note": "pgtasks/peer latency: below 1 is faster"})
            else:
                out.append({"workload": workload, "peer": peer, "ratio": round(mine["rate"] / theirs["rate"], 2),
                            "note": "pgtasks/peer jobs per second: above 1 is faster"})
    return out


def markdown(summary: dict[str, dict[str, Row]], libraries: list[str], ceiling: list[Row]) -> str:
    lines = ["| library | enqueue, 1 job/tx (jobs/s) | bulk, 1,000/call (jobs/s) | bulk, 5,000/call (jobs/s) "
             "| drain, async (jobs/s) | drain, sync (jobs/s) | drain, concurrency 10 (jobs/s) "
             "| idle latency p50 / p95 / p99 (ms) |",
             "|---|---|---|---|---|---|---|---|"]
    for library in libraries:
        cells = []
        for workload in THROUGHPUT:
            row = summary.get(workload, {}).get(library)
            cells.append(f"{row['rate']:,.0f}" if row else "")
        lat = summary.get("idle_latency", {}).get(library)
        cells.append(f"{lat['p50_ms']:.1f} / {lat['p95_ms']:.1f} / {lat['p99_ms']:.1f}" if lat else "")
        lines.append(f"| {library} | " + " | ".join(cells) + " |")
    if ceiling:
        lines += ["", "| pgbench (the database's ceiling) | clients | rows/s |", "|---|---|---|"]
        lines += [f"| {row['workload']} | {row.get('clients', 1)} | {row['rate']:,.0f} |" for row in ceiling]
    return "\n".join(lines)


def run_rounds(dsn: str, workloads: list[str], peers: list[str], pythons: dict[str, Path],
               sizes: dict[str, int], repeat: int, slow_drain: int,
               options: dict[str, list[str]] | None = None) -> list[Row]:
    """Every workload on pgtasks and then on each peer, `repeat` rounds: A and B alternate."""
    rows: list[Row] = []
    for _ in range(max(1, repeat)):
        for workload in workloads:
            row = run_pgtasks(dsn, workload, sizes)
            print(json.dumps(row), flush=True)
            rows.append(row)
            for peer in peers:
                command = peer_args(workload, sizes, peer, slow_drain)
                if command is None:
                    continue
                row = run_peer(pythons[peer], peer, dsn, command, (options or {}).get(peer, []))
                row["workload"] = workload  # the peer scripts name bulk and drain variants alike
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.set_defaults(repeat=3)
    parser.add_argument("--venv", default="/tmp/pgtasks-peers-venv", help="the peers' venv (made if missing)")
    parser.add_argument("--peers", default="pgqueuer,procrastinate",
                        help=f"comma-separated peers to run, of: {', '.join(PEERS)} (celery needs Redis running)")
    parser.add_argument("--newer-python", default=None,
                        help="a Python 3.12+ for the peers that need one (oban); default: found on PATH or ~/.pyenv")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of: {', '.join(WORKLOADS)}")
    parser.add_argument("--enqueue-jobs", type=int, default=5000)
    parser.add_argument("--bulk-jobs", type=int, default=50_000)
    parser.add_argument("--drain-jobs", type=int, default=50_000)
    parser.add_argument("--slow-drain-jobs", type=int, default=10_000,
                        help="drain size for procrastinate, which drains 50k jobs in minutes (rates stay comparable)")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--pgqueuer-batch-size", type=int, default=10,
                        help="pgqueuer's worker --batch-size (pgq run's default: 10)")
    parser.add_argument("--ceiling", action="store_true", help="also run the pgbench ceiling measurements")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table at the end")
    args = parser.parse_args(argv)
    dsn = args.database_url
    workloads = [w for w in args.workloads.split(",") if w]
    if set(workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads {', '.join(sorted(set(workloads) - set(WORKLOADS)))}: "
                     f"choose from {', '.join(WORKLOADS)}")
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peers {', '.join(unknown)}: choose from {', '.join(PEERS)}")
    versions, pythons = ensure_venv(Path(args.venv), peers, args.newer_python) if peers else ({}, {})
    print(json.dumps(machine(dsn, versions)), flush=True)
    sizes = {"enqueue": args.enqueue_jobs, "bulk": args.bulk_jobs, "drain": args.drain_jobs,
             "latency": args.latency_jobs}
    options = {"pgqueuer": ["--batch-size", str(args.pgqueuer_batch_size)]}
    rows = run_rounds(dsn, workloads, peers, pythons, sizes, args.repeat, args.slow_drain_jobs, options)
    ceiling: list[Row] = []
    if args.ceiling:
        out = subprocess.run([sys.executable, str(HERE / "pgbench_ceiling.py"), "--database-url", dsn],
                             capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines():
            print(line, flush=True)
            ceiling.append(json.loads(line))
    libraries = ["pgtasks", *peers]
    summary = summarize(rows, libraries)
    print(json.dumps({"workload": "summary", **summary}), flush=True)
    for ratio in ratios(summary, peers):
        print(json.dumps(ratio), flush=True)
    for row in ceiling:
        if row["workload"] == "claim_complete" and "drain" in summary:
            print(json.dumps({"workload": "drain_vs_ceiling", "clients": row["clients"],
                              "ratio": round(summary["drain"]["pgtasks"]["rate"] / row["rate"], 3)}), flush=True)
        if row["workload"].startswith("insert") and "enqueue" in summary:
            print(json.dumps({"workload": f"enqueue_vs_{row['workload']}",
                              "ratio": round(summary["enqueue"]["pgtasks"]["rate"] / row["rate"], 3)}), flush=True)
    if args.markdown:
        print(markdown(summary, libraries, ceiling))


if __name__ == "__main__":
    main()
