"""Worker memory (f): peak RSS of a `pgtasks worker` draining N jobs, and an optional soak.

RSS is sampled from /proc/<pid>/status (VmRSS, and VmHWM, the kernel's high-water mark) of the
worker subprocess. --soak SECONDS keeps a continuous worker busy with --soak-rate jobs/s for that
long, samples RSS every second, and reports the first-minute and last-minute means and the
slope of a least-squares line through the samples after the first minute (MB per minute).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

from bench_common import base_parser

from pgtasks.ops import bench


def read_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of `pid` in MB (empty once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0
    return values


class Sampler:
    """Samples a process's memory on a background thread until stopped."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, VmRSS MB)
        self.hwm = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, pid: int) -> None:
        started = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                status = read_status(pid)
                if not status:
                    return
                self.samples.append((time.monotonic() - started, status.get("VmRSS", 0.0)))
                self.hwm = max(self.hwm, status.get("VmHWM", 0.0))
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def drain_rss(dsn: str, jobs: int, concurrency: int | None) -> None:
    sampler = Sampler(0.05)
    with bench.throwaway_app(dsn) as app:
        result = bench.drain(app, jobs, concurrency=concurrency, workload="drain_rss",
                             on_start=lambda w: sampler.start(w.pid))
    sampler.stop()
    rss = [mb for _, mb in sampler.samples]
    print(json.dumps({**result.as_dict(), "max_rss_mb": round(max(rss), 1), "vm_hwm_mb": round(sampler.hwm, 1),
                      "samples": len(rss)}), flush=True)


def soak(dsn: str, seconds: float, rate: int, concurrency: int | None) -> None:
    sampler = Sampler(1.0)
    task_batch = max(1, rate // 10)
    enqueued = 0
    with bench.throwaway_app(dsn) as app, bench.WorkerProcess(app, concurrency=concurrency) as worker:
        sampler.start(worker.pid)
        task = bench.noop_task(app)
        started = time.monotonic()
        tick = 0
        while time.monotonic() - started < seconds:
            if not worker.alive():
                raise SystemExit(f"worker died during the soak:\n{worker.log_tail()}")
            task.delay_many([()] * task_batch)
            enqueued += task_batch
            tick += 1
            pause = started + tick * 0.1 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        bench.wait_until(lambda: bench.completed(app) >= enqueued, timeout=600, worker=worker,
                         what="the soak's jobs to complete")
        sampler.stop()
        worker.stop()
    points = sampler.samples
    first = [mb for t, mb in points if t <= 60] or [points[0][1]]
    last = [mb for t, mb in points if t >= points[-1][0] - 60]
    steady = [(t / 60.0, mb) for t, mb in points if t > 60]
    slope = statistics.linear_regression([t for t, _ in steady], [mb for _, mb in steady]).slope \
        if len(steady) >= 2 else 0.0
    print(json.dumps({"library": "pgtasks", "workload": "soak_rss", "seconds": seconds, "rate": rate,
                      "jobs": enqueued, "first_minute_rss_mb": round(statistics.mean(first), 1),
                      "last_minute_rss_mb": round(statistics.mean(last), 1),
                      "max_rss_mb": round(max(mb for _, mb in points), 1), "vm_hwm_mb": round(sampler.hwm, 1),
                      "slope_mb_per_min": round(slope, 3), "samples": len(points)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--soak", type=float, default=0.0, help="soak duration in seconds (0: no soak)")
    parser.add_argument("--soak-rate", type=int, default=1000, help="jobs enqueued per second during the soak")
    args = parser.parse_args(argv)
    if args.jobs > 0:
        drain_rss(args.database_url, args.jobs, args.concurrency)
    if args.soak > 0:
        soak(args.database_url, args.soak, args.soak_rate, args.concurrency)


if __name__ == "__main__":
    main()
