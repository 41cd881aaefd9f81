"""`pgtasks bench`: measure enqueue, bulk enqueue, drain and idle latency against your database."""

from __future__ import annotations

import click

from pgtasks.cli.base import CliState
from pgtasks.ops import bench
from pgtasks.storage.connections import redact


@click.command("bench")
@click.option("--jobs", "-n", type=click.IntRange(min=1), default=50_000, show_default=True,
              help="Jobs for bulk enqueue and drain; single enqueue uses a tenth of it.")
@click.option("--enqueue-jobs", type=click.IntRange(min=1), default=None,
              help="Jobs for the one-per-transaction enqueue  [default: --jobs / 10]")
@click.option("--latency-jobs", type=click.IntRange(min=1), default=200, show_default=True,
              help="Jobs for the idle-latency run (enqueued --latency-interval apart).")
@click.option("--latency-interval", type=click.FloatRange(min=0.0), default=0.02, show_default=True,
              help="Seconds between the idle-latency run's enqueues.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None,
              help="The drain worker's --concurrency  [default: the worker's default]")
@click.option("--chunk", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Jobs per statement in the bulk enqueue.")
@click.option("--no-listen", "no_listen", is_flag=True,
              help="Also measure idle latency with --no-listen (bounded by the poll interval).")
@click.option("--workload", "-w", "workloads", multiple=True, type=click.Choice(bench.WORKLOADS),
              help="Run only these workloads (repeatable)  [default: all]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per workload instead of a table.")
@click.pass_context
def bench_command(ctx: click.Context, jobs: int, enqueue_jobs: int | None, latency_jobs: int,
                  latency_interval: float, concurrency: int | None, chunk: int, no_listen: bool,
                  workloads: tuple[str, ...], as_json: bool) -> None:
    """Benchmark pgtasks against this database, in a throwaway schema dropped afterwards.

    Runs a one-job-per-transaction enqueue, a bulk enqueue, a drain of no-op jobs by a
    `pgtasks worker` subprocess, and the enqueue-to-start latency of an idle worker. Point
    --database-url at a PgBouncer DSN and at the server directly to compare the two.
    """
    state = ctx.find_object(CliState)
    assert state is not None
    app = state.app()
    dsn = app.dsn
    app.connect().close()  # an unreachable database is its one error line, not a banner and then the error
    config = bench.SuiteConfig(jobs=jobs, enqueue_jobs=enqueue_jobs, latency_jobs=latency_jobs,
                               latency_interval=latency_interval, concurrency=concurrency, chunk=chunk,
                               no_listen=no_listen, workloads=workloads or bench.WORKLOADS)
    if not as_json:
        click.echo(f"pgtasks bench against {redact(dsn)} (throwaway schemas {bench.SCHEMA_PREFIX}*)", err=True)

    def report(result: bench.Result) -> None:
        if as_json:
            click.echo(result.to_json())
        else:
            click.echo(f"  {result.workload}: done", err=True)

    results = bench.run_suite(dsn, config, report)
    if not as_json:
        click.echo(bench.format_table(results))
