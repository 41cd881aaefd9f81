"""The pgqueuer application the benchmark's workers run, loaded by pgqueuer's own CLI:

    pgq run pgqueuer_app:create_pgqueuer --mode drain --log-level INFO

as pgqueuer's README runs a consumer: a PgQueuer on an asyncpg connection, under `pgq run`, which
uses uvloop when it is installed (it is a dependency of pgqueuer on Linux). The DSN comes from
BENCH_PGQUEUER_DSN; the schema and channel from pgqueuer's own PGQUEUER_SCHEMA / PGQUEUER_CHANNEL.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from peer_common import write_stamp
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

NOOP, SYNC_NOOP, STAMP = "noop", "sync_noop", "stamp"


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["BENCH_PGQUEUER_DSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    async def noop(job: Job) -> None:
        return None

    def blocking_noop(job: Job) -> None:
        return None

    async def sync_noop(job: Job) -> None:
        # pgqueuer 1.6 takes only async entrypoints; blocking code goes to a thread, as its error
        # message tells users to do.
        await asyncio.to_thread(blocking_noop, job)

    async def stamp(job: Job) -> None:
        write_stamp(int(job.payload or b"0"))

    # pgq.entrypoint(name) is a decorator; called here as a function, like @pgq.entrypoint(name).
    pgq.entrypoint(NOOP)(noop)
    pgq.entrypoint(SYNC_NOOP)(sync_noop)
    pgq.entrypoint(STAMP)(stamp)

    try:
        yield pgq
    finally:
        await connection.close()


def main() -> None:
    """What `pgq run pgqueuer_app:create_pgqueuer` does, without its option parsing.

    pgqueuer 1.6.0's `pgq run` fails before it starts with the typer release pip installs beside it
    (0.29: "'str' object has no attribute 'name'" in its --log-level handling, default included),
    so this runs the same three steps its `run` command runs: pgqueuer's log setup at its default
    level, INFO; pgqueuer.run() on the factory; on uvloop, as the CLI's asyncio_run() does.
    Arguments: --mode drain|continuous [--batch-size N] [--max-concurrent-tasks N].
    """
    import argparse
    from datetime import timedelta

    import uvloop
    from pgqueuer.adapters.cli import supervisor
    from pgqueuer.core import logconfig
    from pgqueuer.domain.types import QueueExecutionMode

    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("drain", "continuous"), default="continuous")
    p.add_argument("--batch-size", type=int, default=10)  # pgq run's default
    p.add_argument("--max-concurrent-tasks", type=int, default=None)
    args = p.parse_args()
    logconfig.setup_fancy_logger(logconfig.LogLevel.INFO)
    uvloop.run(supervisor.run(create_pgqueuer, mode=QueueExecutionMode[args.mode], batch_size=args.batch_size,
                              max_concurrent_tasks=args.max_concurrent_tasks,
                              dequeue_timeout=timedelta(seconds=30)))


if __name__ == "__main__":
    main()
