"""`pgtasks worker`: run jobs until SIGTERM/SIGINT."""

from __future__ import annotations

import click

from pgtasks.cli.base import CliState
from pgtasks.core.logs import configure_logging


@click.command()
@click.option("--queues", "-q", "-Q", default="default", show_default=True,
              help="Comma-separated queues to run (-Q as in Celery).")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=10, show_default=True,
              help="Jobs run at once (sync tasks on threads, async tasks on the event loop).")
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
                   "for LISTEN); "
                   "see the connection budget in docs/pgbouncer.md.")
@click.option("--burst", is_flag=True, help="Exit once no job is ready to run.")
@click.option("--leader-ttl", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds a leader's lease lasts; a crashed leader is replaced within about this long.")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0.05), default=5.0, show_default=True,
              help="Seconds between this worker's heartbeats.")
@click.option("--rescue-after", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds a worker may stay silent before the leader rescues its running jobs.")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None, metavar="PORT",
              help="Serve Prometheus metrics on this port (needs pgtasks[metrics]); 0 picks a free one.")
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
@click.pass_context
def worker(ctx: click.Context, queues: str, concurrency: int, poll_interval: float, listen: bool | None,
           listen_dsn: str | None, grace: float, pool_size: int, burst: bool, leader_ttl: float,
           heartbeat_interval: float, rescue_after: float, log_level: str, log_format: str,
           claim_ahead: bool, wait_for_database: float, metrics_port: int | None = None) -> None:
    """Run a worker: claim jobs with SKIP LOCKED, run them, record outcomes."""
    configure_logging(log_level, log_format)
    app = ctx.find_object(CliState).app(required=True)  # type: ignore[union-attr]
    queue_list = [q.strip() for q in queues.split(",") if q.strip()]
    app.run_worker(metrics_port=metrics_port,
                   queues=queue_list, concurrency=concurrency, poll_interval=poll_interval, listen=listen,
                   listen_dsn=listen_dsn, grace=grace, pool_size=pool_size, burst=burst,
                   leader_ttl=leader_ttl, heartbeat_interval=heartbeat_interval, rescue_after=rescue_after,
                   claim_ahead=claim_ahead, wait_for_database=wait_for_database)
