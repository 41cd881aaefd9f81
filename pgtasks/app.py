"""The App: the composition root. It builds the registry, the database, the store and the enqueuer, and
hands them to tasks, workers and results; none of those import it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from psycopg import AsyncConnection, Connection

from pgtasks.client.enqueue import ConnectionBinding, DatabaseEnqueuer, Enqueuer
from pgtasks.client.results import JobRef, read_job
from pgtasks.client.task import Call, Task, TaskConfig, aenqueue_calls, enqueue_calls
from pgtasks.core.definition import TaskDefinition
from pgtasks.core.errors import ConfigurationError
from pgtasks.core.hooks import Hook, Hooks
from pgtasks.core.limits import Limit, QueueLimits, Rate
from pgtasks.core.options import DEFAULT_MAX_ATTEMPTS
from pgtasks.core.registry import Registry
from pgtasks.core.retry import RetryPolicy
from pgtasks.core.schedules import DEFAULT_CATCH_UP_LIMIT, PeriodicSchedule
from pgtasks.core.unique import Unique
from pgtasks.storage import migrations
from pgtasks.storage.database import Database
from pgtasks.storage.queries import validate_schema_name
from pgtasks.storage.store import Store
from pgtasks.worker import Worker

if TYPE_CHECKING:
    from datetime import timedelta, tzinfo

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound="TaskDefinition[Any, Any]")

SCHEMA_ENV = "PGTASKS_SCHEMA"


def _default_task_name(func: Callable[..., Any]) -> str:
    module = func.__module__
    if module == "__main__":
        # A script run directly: name tasks after the module a worker would import it as.
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        elif getattr(main, "__file__", None):
            module = Path(main.__file__ or "main").stem
    return f"{module}.{func.__qualname__}"


class App:
    """A pgtasks application: tasks, database settings and connection pools.

    `database_url` defaults to $PGTASKS_DATABASE_URL, then to an embedded PostgreSQL (which is
    migrated automatically); `schema` defaults to $PGTASKS_SCHEMA, then to "pgtasks". Nothing
    connects until first use, so creating an App at import time is free.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str | None = None,
        listen_dsn: str | None = None,
        pool_size: int = 4,
        application_name: str = "pgtasks",
        embedded_dir: str | Path | None = None,
    ) -> None:
        self.schema = validate_schema_name(schema or os.environ.get(SCHEMA_ENV) or "pgtasks")
        self.database = Database(database_url, schema=self.schema, listen_dsn=listen_dsn, pool_size=pool_size,
                                 application_name=application_name,
                                 embedded_dir=Path(embedded_dir) if embedded_dir is not None else None)
        self.store = Store(self.schema)
        self.registry: Registry[Task[Any, Any]] = Registry()
        self.binding = ConnectionBinding(f"pgtasks_bound_{id(self)}")
        self._database_enqueuer = DatabaseEnqueuer(self.database, self.store, self.binding, source=self)
        # Where .delay() sends its rows; pgtasks.testing.eager() swaps in one that runs them inline.
        self.enqueuer: Enqueuer = self._database_enqueuer

    # -- configuration ---------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The resolved database DSN (starts the embedded server on first use when needed)."""
        return self.database.dsn

    @property
    def listen_dsn(self) -> str:
        """The DSN the worker's LISTEN connection uses: listen_dsn if set, else the main DSN."""
        return self.database.listen_dsn

    @property
    def is_embedded(self) -> bool:
        return self.database.is_embedded

    @property
    def application_name(self) -> str:
        return self.database.application_name

    @property
    def pool_size(self) -> int:
        return self.database.pool_size

    @property
    def embedded_dir(self) -> Path | None:
        return self.database.embedded_dir

    def use_database_url(self, database_url: str) -> None:
        """Point the app at another database (the CLI's --database-url); only before first use."""
        self.database.use_database_url(database_url)

    # -- the registry ------------------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        return self.registry.tasks

    @property
    def schedules(self) -> Mapping[str, PeriodicSchedule]:
        return self.registry.schedules

    @property
    def hooks(self) -> Hooks:
        return self.registry.hooks

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, *, name: str | None = None, queue: str = "default", priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS, retry: RetryPolicy | None = None, timeout: float | None = None,
        store_result: bool = True, unique: Unique | bool | None = None, concurrency: int | Limit | None = None,
        rate_limit: str | Rate | Limit | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(  # type: ignore[misc] # mypy cannot match ParamSpec-bound overloads to one implementation
        self, func: Callable[P, R] | None = None, /, *, name: str | None = None, queue: str = "default",
        priority: int = 0, max_attempts: int = DEFAULT_MAX_ATTEMPTS, retry: RetryPolicy | None = None,
        timeout: float | None = None, store_result: bool = True, unique: Unique | bool | None = None,
        concurrency: int | Limit | None = None, rate_limit: str | Rate | Limit | None = None,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a task: `@app.task` or `@app.task(queue="mail", timeout=30)`.

        `store_result=False` keeps the return value out of jobs.result. `unique=True` (or a
        pgtasks.Unique) gives every job a unique_key from its arguments, so enqueueing a duplicate
        while one is pending or running returns the existing job (see pgtasks.Unique).

        `concurrency=5` lets at most 5 of its jobs run at once over every worker, and
        `rate_limit="100/m"` start at most 100 a minute; `pgtasks.Limit(max=1, key="customer_id")`
        applies a limit per value of an argument instead (docs/limits.md).
        """
        # Validated now, so a bad option fails at decoration even before the function is seen.
        config = TaskConfig.create("", queue=queue, priority=priority, max_attempts=max_attempts, retry=retry,
                                   timeout=timeout, store_result=store_result, unique=unique,
                                   concurrency=concurrency, rate_limit=rate_limit)

        def register(fn: Callable[P, R]) -> Task[P, R]:
            if isinstance(fn, TaskDefinition):
                raise ConfigurationError(f"{fn.name} is already a task; apply @app.task once")
            named = dataclasses.replace(config, name=name or _default_task_name(fn))
            registered: Task[P, R] = Task(self, fn, named)
            self.registry.add_task(registered)
            return registered

        return register(func) if func is not None else register

    def queue(self, name: str, *, concurrency: int | None = None, rate_limit: str | Rate | None = None,
              burst: int | None = None) -> None:
        """Declare a queue's limits, over every worker: at most `concurrency` of its jobs running at
        once, at most `rate_limit` ("100/m") starting, `burst` tokens at once. A worker writes them
        when it starts; `pgtasks queues limit` changes them while workers run (docs/limits.md)."""
        self.registry.declare_queue(name, QueueLimits.create(concurrency, rate_limit, burst))

    def before_job(self, hook: Hook) -> Hook:
        """Register `hook(event: pgtasks.JobEvent)` to run before each job attempt (a decorator)."""
        self.registry.hooks.before.append(hook)
        return hook

    def after_job(self, hook: Hook) -> Hook:
        """Register a hook to run after each attempt; event.state and event.duration are set."""
        self.registry.hooks.after.append(hook)
        return hook

    def on_error(self, hook: Hook) -> Hook:
        """Register a hook to run when a task raises; event.error is the exception."""
        self.registry.hooks.error.append(hook)
        return hook

    def periodic(
        self, *, cron: str | None = None, every: timedelta | float | None = None, args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None, timezone: str | tzinfo | None = None, catch_up: str = "latest",
        catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT, name: str | None = None, overlap: bool = True,
    ) -> Callable[[T], T]:
        """Run a task on a schedule: `@app.periodic(cron="*/5 * * * *")` placed above `@app.task`.

        Give `cron` (5 fields, or 6 with seconds first) evaluated in `timezone` (IANA name,
        default UTC), or `every` (a timedelta of at least a second). Only the elected leader
        enqueues, and each tick at most once. `catch_up` decides what runs after downtime:
        "latest" (default) runs the most recent missed tick once, "skip" runs none, "all" runs
        each missed tick, the newest `catch_up_limit` of them. `overlap=False` skips a tick
        while the job of the previous tick is still queued or running. See docs/periodic.md.
        """
        return self.registry.periodic(cron=cron, every=every, args=args, kwargs=kwargs,
                                  timezone=timezone, catch_up=catch_up, catch_up_limit=catch_up_limit, name=name,
                                  overlap=overlap)

    # -- connections and transactions -----------------------------------------------------------------

    def connect(self) -> Connection[Any]:
        """A new pooler-safe connection (autocommit, no prepared statements); the caller closes it."""
        return self.database.connect()

    async def aconnect(self) -> AsyncConnection[Any]:
        return await self.database.aconnect()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection[Any]]:
        """Open a transaction on a pooled connection; every .delay() inside joins it.

        Commit happens when the block exits normally, rollback when it raises: jobs exist if and
        only if the block's other writes commit.
        """
        with self._database_enqueuer.transaction() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """Async twin of transaction()."""
        async with self._database_enqueuer.atransaction() as conn:
            yield conn

    def bind(self, conn: Connection[Any] | AsyncConnection[Any]) -> contextlib.AbstractContextManager[None]:
        """Make .delay() / .adelay() inside this block use `conn` (your transaction, your commit)."""
        return self.binding.bind(conn)

    # -- enqueueing ---------------------------------------------------------------------------------

    def _own(self, calls: Sequence[Call]) -> list[Call]:
        calls = list(calls)
        for call in calls:
            if not self.registry.owns(call.task):
                raise ConfigurationError(f"{call.task.name} belongs to another App; enqueue it through that App")
        return calls

    def enqueue_many(self, calls: Sequence[Call], *, connection: Connection[Any] | None = None) -> list[JobRef]:
        """Insert many jobs (of any tasks) in one statement; transactional like .delay()."""
        return enqueue_calls(self.enqueuer, self._own(calls), connection)

    async def aenqueue_many(self, calls: Sequence[Call], *,
                            connection: AsyncConnection[Any] | None = None) -> list[JobRef]:
        """Async twin of enqueue_many()."""
        return await aenqueue_calls(self.enqueuer, self._own(calls), connection)

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        """The job's row as a dict (args, errors and result as JSON text), or None."""
        return read_job(self, job_id)

    # -- schema and workers ---------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied (empty when up to date)."""
        with self.connect() as conn:
            return [m.version for m in migrations.migrate(conn, self.schema)]

    def worker(self, **options: Any) -> Worker:
        """A Worker for this app; options as WorkerConfig's (queues, concurrency, poll_interval, ...)."""
        return Worker(self, **options)

    def run_worker(self, **options: Any) -> None:
        """Run a worker in this thread until SIGTERM/SIGINT (or the queue drains, with burst=True)."""
        self.worker(**options).run()

    def close(self) -> None:
        """Close the sync pool (call `await app.aclose()` from async code to close the async pool too).

        The embedded server, if any, keeps running for other processes; `pgtasks embedded stop` stops it.
        """
        self.database.close()

    async def aclose(self) -> None:
        """Close the async pool of the running event loop, and the sync pool."""
        await self.database.aclose()

