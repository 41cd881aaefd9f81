"""`pgtasks bench` and pgtasks.ops.bench on tiny numbers: the workloads run, count in the database, and clean up."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgtasks import App
from pgtasks.cli import main
from pgtasks.core.errors import BenchmarkError
from pgtasks.ops import bench


def _schema_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchone() is not None


def test_bench_cli_runs_every_workload_and_prints_json(database_url: str) -> None:
    result = CliRunner().invoke(main, ["--database-url", database_url, "bench", "--jobs", "50",
                                       "--latency-jobs", "5", "--latency-interval", "0.005", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["workload"] for r in rows] == ["enqueue", "bulk_enqueue", "drain", "idle_latency"]
    assert [r["jobs"] for r in rows] == [5, 50, 50, 5]
    assert all(r["rate"] > 0 for r in rows)
    assert rows[3]["p50_ms"] <= rows[3]["p99_ms"] <= rows[3]["max_ms"]


def test_bench_cli_table(database_url: str) -> None:
    result = CliRunner().invoke(main, ["--database-url", database_url, "bench", "--jobs", "20", "-w", "bulk"])
    assert result.exit_code == 0, result.output
    assert "bulk_enqueue" in result.stdout and "jobs/s" in result.stdout


def test_drain_counts_completions_in_the_database(database_url: str, conn: psycopg.Connection[Any]) -> None:
    with bench.throwaway_app(database_url) as app:
        result = bench.drain(app, 30, concurrency=3)
        assert bench.completed(app) == 30
        schema = app.schema
        assert _schema_exists(conn, schema)
    assert result.jobs == 30 and result.details["concurrency"] == 3
    assert not _schema_exists(conn, schema), "the throwaway schema is dropped afterwards"


def test_enqueue_workloads_with_arguments(database_url: str) -> None:
    with bench.throwaway_app(database_url) as app:
        bulk = bench.enqueue_bulk(app, 1200, chunk=600, with_args=True)  # COPY-sized calls
        single = bench.enqueue_single(app, 3, with_args=True)
        with app.connect() as conn:
            stored = conn.execute(f'SELECT args FROM "{app.schema}".jobs WHERE task = %s ORDER BY id',
                                  (bench.STAMP_TASK,)).fetchall()
    assert (bulk.workload, bulk.jobs, bulk.details["chunk"]) == ("bulk_enqueue_args", 1200, 600)
    assert (single.workload, single.jobs) == ("enqueue_args", 3)
    # The opening call of each workload, then the timed ones with their arguments.
    assert [row[0] for row in stored] == [{}, *({"n": i} for i in range(1200)), {}, *({"n": i} for i in range(3))]


def test_throwaway_schema_is_dropped_after_an_error(database_url: str, conn: psycopg.Connection[Any]) -> None:
    names: list[str] = []
    with pytest.raises(RuntimeError), bench.throwaway_app(database_url) as app:
        names.append(app.schema)
        raise RuntimeError("boom")
    assert names and not _schema_exists(conn, names[0])


def test_drop_schema_refuses_a_non_bench_schema(app: App) -> None:
    with pytest.raises(BenchmarkError, match="refusing to drop"):
        bench.drop_schema(app)


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    figures = bench.percentiles(values)
    assert figures["p50_ms"] == 50.5 and figures["max_ms"] == 100.0
    assert figures["p95_ms"] < figures["p99_ms"] < 100.0
    with pytest.raises(BenchmarkError):
        bench.percentiles([])
