"""benchmarks/compare.py's pgtasks side on tiny numbers, and the clocks it shares with the peers.

The DrainClock must time a drain from outside the library, and the StampFile must measure start
latency from the client's clock to the task's first line; a clock that cannot fail would make
every figure of the comparison meaningless, so both are checked here against a real worker.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(BENCHMARKS / "peers"))

import compare  # noqa: E402
from peer_common import DrainClock, StampFile, write_stamp  # noqa: E402

from pgtasks.ops import bench  # noqa: E402


def _counts(values: list[int]) -> Iterator[int]:
    yield from values
    while True:
        yield values[-1]


def test_the_drain_clock_runs_from_the_first_completion_to_the_last() -> None:
    polls = _counts([10, 10, 7, 3, 0])
    clock = DrainClock(lambda: next(polls), jobs=10, interval=0.01).start()
    seconds = clock.seconds(timeout=5)
    # Four intervals between the poll before the first completion and the last poll; the ends are
    # midpoints, so the window is about two to three intervals, never zero and never the whole run.
    assert 0.005 < seconds < 0.2
    assert clock.polls == 5


def test_the_drain_clock_raises_when_the_drain_never_ends() -> None:
    clock = DrainClock(lambda: 5, jobs=10, interval=0.01).start()
    with pytest.raises(RuntimeError, match="saw no end"):
        clock.seconds(timeout=0.2)


def test_the_drain_clock_reports_a_failed_poll() -> None:
    def broken() -> int:
        raise OSError("connection lost")

    clock = DrainClock(broken, jobs=10, interval=0.01).start()
    with pytest.raises(RuntimeError, match="connection lost"):
        clock.seconds(timeout=5)


def test_stamps_pair_each_job_with_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    stamps = StampFile()
    try:
        monkeypatch.setenv(StampFile.ENV, str(stamps.path))
        for n in range(3):
            stamps.mark(n)
            write_stamp(n)
        latencies = stamps.latencies_ms()
        assert len(latencies) == 3 and all(0 <= ms < 1000 for ms in latencies)
        stamps.mark(3)  # enqueued, never started
        with pytest.raises(RuntimeError, match="1 of 4 jobs left no stamp"):
            stamps.latencies_ms()
    finally:
        stamps.close()


def test_pgtasks_drain_is_timed_from_outside_next_to_its_own_timestamps(database_url: str) -> None:
    with bench.throwaway_app(database_url) as app:
        # bench.drain() raises unless every job completed (counted in the jobs table).
        row = compare.pgtasks_drain(app, 300, "drain", bench.ASYNC_NOOP_TASK, None)
    assert row["clock"] == "outside" and row["jobs"] == 300 and row["task"] == "async"
    assert row["seconds"] > 0 and row["own_timestamps_seconds"] > 0


def test_pgtasks_latency_reads_the_clients_clock_and_the_tasks_first_line(database_url: str) -> None:
    with bench.throwaway_app(database_url) as app:
        row = compare.pgtasks_latency(app, 5, interval=0.005)
    assert row["clock"] == "client to task" and row["jobs"] == 5
    assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"] < 60_000


def test_pgtasks_bulk_goes_through_signatures(database_url: str) -> None:
    with bench.throwaway_app(database_url) as app:
        row = compare.pgtasks_bulk(app, 250, 100)
        with app.connect() as conn:
            stored = conn.execute(f"SELECT count(*), count(DISTINCT args) FROM {app.schema}.jobs "
                                  "WHERE task = %s", (bench.STAMP_TASK,)).fetchone()
    assert row["workload"] == "bulk_100" and row["jobs"] == 250
    assert stored == (251, 251), "each job keeps its own argument (and the pool-opening one has none)"


def test_the_clock_thread_does_not_outlive_its_drain() -> None:
    clock = DrainClock(lambda: 0, jobs=1, interval=0.01).start()
    clock.seconds(timeout=5)
    clock.abort()
    assert not any(t.name == "drain-clock" and t.is_alive() for t in threading.enumerate())
