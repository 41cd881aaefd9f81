"""pgtasks side by side with pgqueuer and procrastinate: the same workloads, in one run, as ratios.

Makes (once) a separate venv with the peers (default /tmp/pgtasks-peers-venv: pgqueuer 1.6.0 and
procrastinate 3.10.0 when the index has them, else the latest), then for each repeat runs every
workload on pgtasks and on each peer (benchmarks/peers/*_bench.py), interleaved so that noise
from a shared machine hits all of them alike. Prints one JSON line per measurement, then the
medians, the ratios pgtasks/peer, and (with --markdown) a table for docs/performance.md.
--ceiling also runs benchmarks/pgbench_ceiling.py's measurements in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
from bench_common import base_parser

import pgtasks
from pgtasks import bench

HERE = Path(__file__).resolve().parent
PEERS = {"pgqueuer": ("pgqueuer", "1.6.0"), "procrastinate": ("procrastinate", "3.10.0")}
THROUGHPUT = ("enqueue", "bulk_enqueue", "drain", "drain_c10")
Row = dict[str, Any]


def ensure_venv(venv: Path) -> dict[str, str]:
    """Create the peers venv if needed and install the pinned peers (falling back to the latest)."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    versions: dict[str, str] = {}
    for package, pinned in PEERS.values():
        found = _installed_version(python, package)
        if found is None:
            done = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{package}=={pinned}",
                                   "psycopg[binary]"], check=False)
            if done.returncode != 0:
                print(f"{package}=={pinned} is not available; installing the latest", file=sys.stderr)
                subprocess.run([str(python), "-m", "pip", "install", "-q", package, "psycopg[binary]"], check=True)
            found = _installed_version(python, package)
        versions[package] = found or "?"
    return versions


def _installed_version(python: Path, package: str) -> str | None:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def run_peer(python: Path, library: str, dsn: str, args: list[str]) -> Row:
    script = HERE / "peers" / f"{library}_bench.py"
    out = subprocess.run([str(python), str(script), "--database-url", dsn, *args], capture_output=True,
                         text=True, check=False, cwd=script.parent)
    if out.returncode != 0:
        raise SystemExit(f"{library} {' '.join(args)} failed:\n{out.stdout}\n{out.stderr[-4000:]}")
    row: Row = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def run_pgtasks(dsn: str, workload: str, sizes: dict[str, int], chunk: int) -> Row:
    with bench.throwaway_app(dsn) as app:
        if workload == "enqueue":
            result = bench.enqueue_single(app, sizes["enqueue"])
        elif workload == "bulk_enqueue":
            result = bench.enqueue_bulk(app, sizes["bulk"], chunk=chunk)
        elif workload == "drain":
            result = bench.drain(app, sizes["drain"])
        elif workload == "drain_c10":
            result = bench.drain(app, sizes["drain"], concurrency=10, workload="drain_c10")
        else:
            result = bench.idle_latency(app, sizes["latency"])
    return result.as_dict()


def peer_args(workload: str, sizes: dict[str, int], chunk: int, library: str, slow_drain: int) -> list[str]:
    drain_jobs = slow_drain if library == "procrastinate" else sizes["drain"]
    if workload == "enqueue":
        return ["enqueue", "--jobs", str(sizes["enqueue"])]
    if workload == "bulk_enqueue":
        return ["bulk", "--jobs", str(sizes["bulk"]), "--chunk", str(chunk)]
    if workload == "drain":
        return ["drain", "--jobs", str(drain_jobs)]
    if workload == "drain_c10":
        return ["drain", "--jobs", str(drain_jobs), "--concurrency", "10"]
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
    lines = ["| library | enqueue, 1 job/tx (jobs/s) | bulk enqueue (jobs/s) | drain, default (jobs/s) "
             "| drain, concurrency 10 (jobs/s) | idle latency p50 / p95 / p99 (ms) |",
             "|---|---|---|---|---|---|"]
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


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.set_defaults(repeat=3)
    parser.add_argument("--venv", default="/tmp/pgtasks-peers-venv", help="the peers' venv (made if missing)")
    parser.add_argument("--peers", default="pgqueuer,procrastinate", help="comma-separated peers to run")
    parser.add_argument("--workloads", default="enqueue,bulk_enqueue,drain,drain_c10,idle_latency")
    parser.add_argument("--enqueue-jobs", type=int, default=5000)
    parser.add_argument("--bulk-jobs", type=int, default=50_000)
    parser.add_argument("--drain-jobs", type=int, default=50_000)
    parser.add_argument("--slow-drain-jobs", type=int, default=10_000,
                        help="drain size for procrastinate, which drains 50k jobs in minutes (rates stay comparable)")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=5000, help="bulk enqueue jobs per statement (all libraries)")
    parser.add_argument("--ceiling", action="store_true", help="also run the pgbench ceiling measurements")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table at the end")
    args = parser.parse_args(argv)
    dsn = args.database_url
    peers = [p for p in args.peers.split(",") if p]
    versions = ensure_venv(Path(args.venv)) if peers else {}
    python = Path(args.venv) / "bin" / "python"
    print(json.dumps(machine(dsn, versions)), flush=True)
    sizes = {"enqueue": args.enqueue_jobs, "bulk": args.bulk_jobs, "drain": args.drain_jobs,
             "latency": args.latency_jobs}
    rows: list[Row] = []
    for _ in range(max(1, args.repeat)):
        for workload in args.workloads.split(","):
            row = run_pgtasks(dsn, workload, sizes, args.chunk)
            print(json.dumps(row), flush=True)
            rows.append(row)
            for peer in peers:
                row = run_peer(python, peer, dsn, peer_args(workload, sizes, args.chunk, peer, args.slow_drain_jobs))
                if workload == "drain_c10":
                    row["workload"] = "drain_c10"
                print(json.dumps(row), flush=True)
                rows.append(row)
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
