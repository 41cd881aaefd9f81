"""Command-line plumbing shared by the pgtasks benchmark scripts: the database URL, repeats, JSON lines."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pgtasks import App
from pgtasks.ops import bench
from pgtasks.ops.bench import Result

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
LATENCY_KEYS = ("p50_ms", "p95_ms", "p99_ms", "max_ms")


def base_parser(description: str | None) -> argparse.ArgumentParser:
    """--database-url (else $PGTASKS_DATABASE_URL, else the local test database) and --repeat."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("PGTASKS_DATABASE_URL", DEFAULT_DSN),
                        help="PostgreSQL DSN [env: PGTASKS_DATABASE_URL]")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each workload this many times and report the median")
    return parser


def median(results: list[Result]) -> Result:
    """One result for repeated runs: the median run by rate, or the median of each latency percentile."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    if "p50_ms" in first.details:
        details = dict(first.details)
        for key in LATENCY_KEYS:
            details[key] = round(statistics.median(float(r.details[key]) for r in results), 2)
        details["runs_p50_p99_ms"] = [[r.details["p50_ms"], r.details["p99_ms"]] for r in results]
        return Result(first.workload, first.jobs, statistics.median(r.seconds for r in results),
                      statistics.median(r.rate for r in results), first.library, details)
    ordered = sorted(results, key=lambda r: r.rate)
    middle = ordered[len(ordered) // 2]
    details = {**middle.details, "runs": [round(r.rate, 1) for r in results]}
    return Result(middle.workload, middle.jobs, middle.seconds, middle.rate, middle.library, details)


def repeated(times: int, run: Callable[[], Result]) -> Result:
    """Run a workload `times` times (each on a fresh schema) and return the median."""
    return median([run() for _ in range(max(1, times))])


def emit(result: Result) -> None:
    print(result.to_json(), flush=True)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """`rows` as a Markdown table of `columns`, padded so it also reads as plain text."""
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"
              for r in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def throwaway_app(make_app: Callable[..., App], dsn: str, **options: Any) -> Iterator[App]:
    """`make_app(dsn, schema=<a fresh pgtasks_bench_* name>, **options)`, migrated; on exit closed and its
    schema dropped."""
    app = make_app(dsn, schema=bench.SCHEMA_PREFIX + uuid.uuid4().hex[:12], **options)
    try:
        app.migrate()
        yield app
    finally:
        app.close()
        bench.drop_schema(app)
