"""`pgtasks worker`: run jobs until SIGTERM/SIGINT, in one process or, with --processes N, under a supervisor."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click
from click.core import ParameterSource

from pgtasks.cli.base import CliState
from pgtasks.cli.output import parse_duration
from pgtasks.core.logs import configure_logging
from pgtasks.leadership.cleaner import Retention
from pgtasks.worker.config import WorkerConfig
from pgtasks.worker.lifetime import EXIT_RECYCLED
from pgtasks.worker.supervisor import Supervisor, SupervisorConfig


class ProcessCount(click.ParamType[int]):
    """A positive integer, or `auto`: the CPUs this process may run on."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif str(value).strip().lower() == "auto":
            return available_cpus()
        else:
            try:
                number = int(str(value))
            except ValueError:
                self.fail(f"{value!r}: expected a number of processes >= 1, or 'auto'", param, ctx)
        if number < 1:
            self.fail(f"{value!r}: expected a number of processes >= 1, or 'auto'", param, ctx)
        return number


def available_cpus() -> int:
    """os.cpu_count(), narrowed to the CPUs this process may use where the OS says (a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@click.command()
@click.option("--queues", "-q", "-Q", default="default", show_default=True,
              help="Comma-separated queues to run (-Q as in Celery).")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=10, show_default=True,
              help="Jobs run at once (sync tasks on threads, async tasks on the event loop), per process.")
@click.option("--processes", type=ProcessCount(), default="1", show_default=True,
              help="Worker processes, for CPU-bound tasks: N > 1 starts a supervisor that runs N worker "
                   "processes (each with its own --concurrency, pool and listener), forwards signals and "
                   "restarts crashed ones; 'auto' = one per CPU. See docs/worker.md.")
@click.option("--max-jobs-per-child", "max_jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="Recycling: after claiming N jobs the process finishes its running jobs and exits, and "
                   "its supervisor replaces it (also with --processes 1: exit 0, for your process manager).")
@click.option("--max-memory-per-child", "max_memory_mb", type=click.IntRange(min=1), default=None, metavar="MB",
              help="Recycling: once the process's resident memory passes MB mebibytes (checked as jobs "
                   "finish), it finishes its running jobs and exits, to be replaced.")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Seconds between polls; the safety net for LISTEN, the only wakeup with --no-listen.")
@click.option("--listen/--no-listen", default=None,
              help="Wake on LISTEN/NOTIFY. Default: auto - LISTEN where a NOTIFY round trip works, poll-only "
                   "behind a transaction pooler. --listen makes a transaction pooler an error.")
@click.option("--listen-dsn", metavar="DSN", envvar="PGTASKS_LISTEN_DSN", default=None,
              help="A direct or session-pooled DSN for the LISTEN connection only, so wakeups stay instant "
                   "when the database URL goes through a transaction pooler [env: PGTASKS_LISTEN_DSN]")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds running jobs get to finish on shutdown before they are put back.")
@click.option("--pool-size", type=click.IntRange(min=2), default=4, show_default=True,
              help="Database connections for fetching, completing, heartbeats and leader duties (plus one "
                   "for LISTEN), per process; "
                   "see the connection budget in docs/pgbouncer.md.")
@click.option("--burst", is_flag=True, help="Exit once no job is ready to run (with --processes N: once every "
                                            "process has drained).")
@click.option("--leader-ttl", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds a leader's lease lasts; a crashed leader is replaced within about this long.")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0.05), default=5.0, show_default=True,
              help="Seconds between this worker's heartbeats.")
@click.option("--rescue-after", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds a worker may stay silent before the leader rescues its running jobs.")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None, metavar="PORT",
              help="Serve Prometheus metrics on this port (needs pgtasks[metrics]); 0 picks a free one. "
                   "With --processes N, process i serves PORT + i.")
@click.option("--retention", default=None, metavar="STATE=DURATION,...",
              help="How long the leader's cleaner keeps finished rows, e.g. "
                   "completed=1h,discarded=30d,cancelled=forever. Keys: completed, cancelled, discarded, "
                   "periodic_fires, dead_workers; durations as 90s, 15m, 12h, 7d; forever keeps them. Unnamed "
                   "keys keep their defaults (completed 24h, cancelled 24h, discarded 7d, periodic_fires 7d, "
                   "dead_workers 1h). Celery's result_expires is completed=.")
@click.option("--claim-ahead/--no-claim-ahead", default=True, show_default=True,
              help="While jobs are short (<= 50 ms), claim up to a batch beyond the free slots.")
@click.option("--wait-for-database", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              envvar="PGTASKS_WAIT_FOR_DATABASE",
              help="At start, keep retrying an unreachable database this long (a line per try) before exiting "
                   "2; 0 exits at once [env: PGTASKS_WAIT_FOR_DATABASE]")
@click.option("--log-level", "-l", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Log level (-l as in Celery; any case: -l info).")
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
# Set by the supervisor on each child it starts ("host:pid"); not for people.
@click.option("--supervisor", default=None, hidden=True)
@click.pass_context
def worker(ctx: click.Context, queues: str, concurrency: int, processes: int, max_jobs: int | None,
           max_memory_mb: int | None, poll_interval: float, listen: bool | None,
           listen_dsn: str | None, grace: float, pool_size: int, burst: bool, leader_ttl: float,
           heartbeat_interval: float, rescue_after: float, log_level: str, log_format: str,
           claim_ahead: bool, wait_for_database: float, metrics_port: int | None = None,
           supervisor: str | None = None, retention: str | None = None) -> None:
    """Run a worker: claim jobs with SKIP LOCKED, run them, record outcomes.

    Exit status: 0 after a requested stop (or, with --burst, once drained); 2 for a configuration
    or database error at start. With --processes N, the supervisor's: 3 when children keep
    crashing (5 crashes within 60 s), 2 when a first child cannot start, 1 when a child exited
    non-zero during the stop.
    """
    configure_logging(log_level, log_format)
    app = ctx.find_object(CliState).app(required=True)  # type: ignore[union-attr]
    queue_list = [q.strip() for q in queues.split(",") if q.strip()]
    options: dict[str, Any] = dict(
        metrics_port=metrics_port, queues=queue_list, concurrency=concurrency, poll_interval=poll_interval,
        listen=listen, listen_dsn=listen_dsn, grace=grace, pool_size=pool_size, burst=burst, leader_ttl=leader_ttl,
        heartbeat_interval=heartbeat_interval, rescue_after=rescue_after, claim_ahead=claim_ahead,
        wait_for_database=wait_for_database, max_jobs=max_jobs, max_memory_mb=max_memory_mb,
        retention=parse_retention(retention) if retention is not None else None)
    if processes == 1:  # the worker of old: no supervisor process
        running = app.worker(**options, supervisor=supervisor)
        running.run()
        if running.recycled is not None and supervisor is not None:
            ctx.exit(EXIT_RECYCLED)  # tells the supervisor to replace it (on its own, it exits 0)
        return
    if supervisor is not None:
        raise click.UsageError("--supervisor is set by a supervisor on the processes it starts, with --processes 1")
    config = WorkerConfig.from_options(options)  # a bad option fails here, once, not in N children
    command_of = _child_command(ctx, metrics_port)
    ctx.exit(Supervisor(command_of, SupervisorConfig(processes=processes, burst=burst),
                        budget=config.connection_budget()).run())


def parse_retention(text: str) -> Retention:
    """`completed=1h,discarded=30d,cancelled=forever` as a Retention; unnamed keys keep their defaults."""
    keys = [f.name for f in dataclasses.fields(Retention)]
    values: dict[str, timedelta | None] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, duration = item.partition("=")
        name, duration = name.strip(), duration.strip()
        if not sep or name not in keys:
            raise click.BadParameter(f"{item!r}: expected STATE=DURATION with STATE one of {', '.join(keys)}, "
                                     "e.g. --retention completed=1h,discarded=30d", param_hint="--retention")
        if name in values:
            raise click.BadParameter(f"{name} is given twice", param_hint="--retention")
        values[name] = None if duration == "forever" else timedelta(seconds=parse_duration(duration))
    return dataclasses.replace(Retention(), **values)


def _child_command(ctx: click.Context, metrics_port: int | None) -> Callable[[int, str], list[str]]:
    """argv of child `slot`: this interpreter, `-m pgtasks`, the options this command line gave
    (the root's and the worker's; environment variables reach the children by inheritance, and
    are not copied onto command lines where `ps` shows them), then --processes 1 and --supervisor."""
    assert ctx.parent is not None
    root = given_options(ctx.parent)
    own = given_options(ctx, skip={"processes", "metrics_port", "supervisor"})

    def command(slot: int, supervisor: str) -> list[str]:
        port = [] if metrics_port is None else ["--metrics-port", str(metrics_port + slot if metrics_port else 0)]
        return [sys.executable, "-m", "pgtasks", *root, "worker", *own, *port, "--processes", "1",
                "--supervisor", supervisor]

    return command


def given_options(ctx: click.Context, skip: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The options of `ctx`'s command that were given on the command line, as arguments again."""
    args: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or not param.expose_value or param.name is None or param.name in skip:
            continue
        if ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        flag = max(param.opts, key=len)  # --queues rather than -q
        if param.is_flag and param.secondary_opts:
            args.append(flag if value else max(param.secondary_opts, key=len))
        elif param.is_flag:
            if value:
                args.append(flag)
        elif value is not None:
            args += [flag, str(value)]
    return args
