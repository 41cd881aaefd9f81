"""The App: configuration, the task registry, connections, and transactional enqueueing."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import psycopg
from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgtasks.client.task import Call, JobRef, Task, TaskConfig
from pgtasks.core.aio import cancel_and_wait
from pgtasks.core.errors import ConfigurationError, DuplicateTaskError, SchemaNotMigratedError
from pgtasks.core.hooks import Hook, Hooks  # issue 6
from pgtasks.core.models import EnqueueRow
from pgtasks.core.options import validate_max_attempts, validate_priority, validate_queue
from pgtasks.core.retry import Backoff, RetryPolicy
from pgtasks.core.unique import Unique, as_unique  # issue 6
from pgtasks.storage import migrations
from pgtasks.storage.connections import (
    check_dsn,
    close_with_loop,
    connection_kwargs,
    make_async_pool,
    make_pool,
    refusing_statement_pooling,
)
from pgtasks.storage.queries import validate_schema_name
from pgtasks.storage.store import Store

if TYPE_CHECKING:
    from datetime import timedelta, tzinfo

    from pgtasks.core.schedules import PeriodicSchedule
    from pgtasks.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound="Task[Any, Any]")

DATABASE_URL_ENV = "PGTASKS_DATABASE_URL"
SCHEMA_ENV = "PGTASKS_SCHEMA"
logger = logging.getLogger("pgtasks")


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
        if database_url is not None:
            check_dsn(database_url)
        if listen_dsn is not None:
            check_dsn(listen_dsn, name="listen_dsn")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigurationError(f"pool_size={pool_size!r}: expected an integer >= 1")
        self._database_url = database_url
        self._listen_dsn = listen_dsn
        self.pool_size = pool_size
        self.application_name = application_name
        self.embedded_dir = Path(embedded_dir) if embedded_dir is not None else None
        self.store = Store(self.schema)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.hooks = Hooks()  # before_job / after_job / on_error (issue 6)
        self._eager: Any = None  # set by pgtasks.testing.eager(app): .delay() runs inline (issue 6)
        self.schedules: dict[str, PeriodicSchedule] = {}  # @app.periodic (issue 3)
        self._bound: contextvars.ContextVar[Connection[Any] | AsyncConnection[Any] | None] = (
            contextvars.ContextVar(f"pgtasks_bound_{id(self)}", default=None)
        )
        self._lock = threading.Lock()
        self._dsn: str | None = None
        self._is_embedded = False
        self._pool: ConnectionPool | None = None
        self._async_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}
        # Per loop: the task that closes that loop's pool when the loop shuts down (see close_with_loop).
        self._async_pool_closers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    # -- configuration ---------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The resolved database DSN (starts the embedded server on first use when needed)."""
        with self._lock:
            if self._dsn is None:
                self._dsn = self._resolve_dsn()
            return self._dsn

    def use_database_url(self, database_url: str) -> None:
        """Point the app at another database (the CLI's --database-url); only before first use."""
        check_dsn(database_url)
        with self._lock:
            if self._dsn is not None and self._dsn != database_url:
                raise ConfigurationError("use_database_url(): the app is already connected; call it before first use")
            self._database_url = database_url
            self._dsn = None

    @property
    def listen_dsn(self) -> str:
        """The DSN the worker's LISTEN connection uses: listen_dsn if set, else the main DSN."""
        return self._listen_dsn or self.dsn

    @property
    def is_embedded(self) -> bool:
        self.dsn  # noqa: B018 - resolve first
        return self._is_embedded

    def _resolve_dsn(self) -> str:
        if self._database_url:
            return self._database_url
        env = os.environ.get(DATABASE_URL_ENV)
        if env:
            return check_dsn(env, name=DATABASE_URL_ENV)
        from pgtasks.storage.embedded import embedded_dsn  # noqa: PLC0415 - optional, heavy

        dsn = embedded_dsn(self.embedded_dir)
        self._is_embedded = True
        # The zero-setup default migrates itself; a real database is migrated on purpose.
        with psycopg.connect(dsn, **connection_kwargs(self.application_name)) as conn:
            applied = migrations.migrate(conn, self.schema)
        if applied:
            logger.info("migrate.applied", extra={"versions": [m.version for m in applied]})
        return dsn

    # -- task registry ---------------------------------------------------------------------------

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, *, name: str | None = None, queue: str = "default", priority: int = 0, max_attempts: int = 20,
        retry: RetryPolicy | None = None, timeout: float | None = None, store_result: bool = True,
        unique: Unique | bool | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(  # type: ignore[misc] # mypy cannot match ParamSpec-bound overloads to one implementation
        self, func: Callable[P, R] | None = None, /, *, name: str | None = None, queue: str = "default",
        priority: int = 0, max_attempts: int = 20, retry: RetryPolicy | None = None, timeout: float | None = None,
        store_result: bool = True, unique: Unique | bool | None = None,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a task: `@app.task` or `@app.task(queue="mail", timeout=30)`.

        `store_result=False` keeps the return value out of jobs.result. `unique=True` (or a
        pgtasks.Unique) gives every job a unique_key from its arguments, so enqueueing a duplicate
        while one is pending or running returns the existing job (see pgtasks.core.unique).
        """
        unique_spec = as_unique(unique)
        validate_queue(queue)
        validate_priority(priority)
        validate_max_attempts(max_attempts)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise ConfigurationError(f"timeout={timeout!r}: expected a positive number of seconds, or None")
        if retry is not None and not callable(getattr(retry, "delay", None)):
            raise ConfigurationError(f"retry={retry!r}: expected a retry policy with a delay(attempt) method")

        def register(fn: Callable[P, R]) -> Task[P, R]:
            if isinstance(fn, Task):
                raise ConfigurationError(f"{fn.name} is already a task; apply @app.task once")
            task_name = name or _default_task_name(fn)
            config = TaskConfig(task_name, queue, priority, max_attempts, retry or Backoff(),
                                float(timeout) if timeout is not None else None,
                                store_result=bool(store_result), unique=unique_spec)
            if unique_spec is not None:
                unique_spec.check(fn, task_name)
            if task_name in self.tasks:
                raise DuplicateTaskError(
                    f"a task named {task_name!r} is already registered; pass a distinct name=... "
                    "to @app.task"
                )
            registered: Task[P, R] = Task(self, fn, config)
            self.tasks[task_name] = registered
            return registered

        return register(func) if func is not None else register

    # -- middleware hooks (issue 6; logic in pgtasks.core.hooks) ------------------------------------------

    def before_job(self, hook: Hook) -> Hook:
        """Register `hook(event: pgtasks.JobEvent)` to run before each job attempt (a decorator)."""
        self.hooks.before.append(hook)
        return hook

    def after_job(self, hook: Hook) -> Hook:
        """Register a hook to run after each attempt; event.state and event.duration are set."""
        self.hooks.after.append(hook)
        return hook

    def on_error(self, hook: Hook) -> Hook:
        """Register a hook to run when a task raises; event.error is the exception."""
        self.hooks.error.append(hook)
        return hook

    # -- periodic tasks (issue 3; logic in pgtasks.core.schedules) -----------------------------------------

    def periodic(
        self, *, cron: str | None = None, every: timedelta | float | None = None, args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None, timezone: str | tzinfo | None = None, catch_up: str = "latest",
        catch_up_limit: int = 100, name: str | None = None, overlap: bool = True,
    ) -> Callable[[T], T]:
        """Run a task on a schedule: `@app.periodic(cron="*/5 * * * *")` placed above `@app.task`.

        Give `cron` (5 fields, or 6 with seconds first) evaluated in `timezone` (IANA name,
        default UTC), or `every` (a timedelta of at least a second). Only the elected leader
        enqueues, and each tick at most once. `catch_up` decides what runs after downtime:
        "latest" (default) runs the most recent missed tick once, "skip" runs none, "all" runs
        each missed tick, the newest `catch_up_limit` of them. `overlap=False` skips a tick
        while the job of the previous tick is still queued or running. See docs/periodic.md.
        """
        from pgtasks.core.schedules import periodic_decorator  # noqa: PLC0415 - keeps croniter off the import path

        return periodic_decorator(self, cron=cron, every=every, args=args, kwargs=kwargs, timezone=timezone,
                                  catch_up=catch_up, catch_up_limit=catch_up_limit, name=name, overlap=overlap)

    # -- connections ---------------------------------------------------------------------------

    def _sync_pool(self) -> ConnectionPool:
        with self._lock:
            pool = self._pool
        if pool is None:
            dsn = self.dsn
            with self._lock:
                if self._pool is None:
                    self._pool = make_pool(dsn, application_name=self.application_name,
                                           max_size=self.pool_size, name="pgtasks-enqueue")
                    self._pool.open()
                pool = self._pool
        return pool

    async def _async_pool(self) -> AsyncConnectionPool:
        # An asyncio pool belongs to the event loop that opened it, so keep one per loop.
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is not None and pool.closed:
            # Its closer ran while the loop goes on: someone cancelled every task (a test
            # framework's cleanup, say). Open a new pool rather than fail on the closed one.
            pool = None
        if pool is None:
            # Pools of event loops that have since closed cannot be closed cleanly; drop them.
            for stale in [lp for lp in self._async_pools if lp.is_closed()]:
                del self._async_pools[stale]
                self._async_pool_closers.pop(stale, None)
            dsn = await asyncio.to_thread(lambda: self.dsn)
            pool = make_async_pool(dsn, application_name=self.application_name,
                                   max_size=self.pool_size, name="pgtasks-async-enqueue")
            await pool.open()
            # Another coroutine of this loop may have opened one during our awaits: use theirs.
            existing = self._async_pools.get(loop)
            if existing is not None and not existing.closed:
                await pool.close()
                return existing
            self._async_pools[loop] = pool
            self._async_pool_closers[loop] = close_with_loop(pool)
        return pool

    def connect(self) -> Connection[Any]:
        """A new pooler-safe connection (autocommit, no prepared statements); the caller closes it."""
        return psycopg.connect(self.dsn, **connection_kwargs(self.application_name))

    async def aconnect(self) -> AsyncConnection[Any]:
        dsn = await asyncio.to_thread(lambda: self.dsn)
        return await AsyncConnection.connect(dsn, **connection_kwargs(self.application_name))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection[Any]]:
        """Open a transaction on a pooled connection; every .delay() inside joins it.

        Commit happens when the block exits normally, rollback when it raises: jobs exist if and
        only if the block's other writes commit.
        """
        with refusing_statement_pooling(), self._sync_pool().connection() as conn, conn.transaction(), \
                self.bind(conn):
            yield conn

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """Async twin of transaction()."""
        pool = await self._async_pool()
        with refusing_statement_pooling():
            async with pool.connection() as conn, conn.transaction():
                with self.bind(conn):
                    yield conn

    @contextlib.contextmanager
    def bind(self, conn: Connection[Any] | AsyncConnection[Any]) -> Iterator[None]:
        """Make .delay() / .adelay() inside this block use `conn` (your transaction, your commit)."""
        if not isinstance(conn, Connection | AsyncConnection):
            raise ConfigurationError(f"bind({conn!r}): expected a psycopg Connection or AsyncConnection")
        token = self._bound.set(conn)
        try:
            yield
        finally:
            self._bound.reset(token)

    # -- enqueueing ------------------------------------------------------------------------------

    def _sync_target(self, connection: Connection[Any] | None) -> Connection[Any] | None:
        conn = connection if connection is not None else self._bound.get()
        if isinstance(conn, AsyncConnection):
            raise ConfigurationError(
                "an AsyncConnection is bound here; use `await task.adelay(...)` / `aapply_async` "
                "(the sync .delay() cannot use an async connection)"
            )
        if conn is not None and not isinstance(conn, Connection):
            raise ConfigurationError(f"connection={conn!r}: expected a psycopg Connection")
        return conn

    def _async_target(self, connection: AsyncConnection[Any] | None) -> AsyncConnection[Any] | None:
        conn = connection if connection is not None else self._bound.get()
        if isinstance(conn, Connection):
            raise ConfigurationError(
                "a sync Connection is bound here; use `task.delay(...)` (adelay needs an AsyncConnection)"
            )
        if conn is not None and not isinstance(conn, AsyncConnection):
            raise ConfigurationError(f"connection={conn!r}: expected a psycopg AsyncConnection")
        return conn

    def _insert(self, row: EnqueueRow, connection: Connection[Any] | None) -> int:
        conn = self._sync_target(connection)
        if conn is not None:
            return self.store.job_insert(conn, row)
        with self._sync_pool().connection() as pooled:
            return self.store.job_insert(pooled, row)

    async def _ainsert(self, row: EnqueueRow, connection: AsyncConnection[Any] | None) -> int:
        conn = self._async_target(connection)
        if conn is not None:
            return await self.store.ajob_insert(conn, row)
        pool = await self._async_pool()
        async with pool.connection() as pooled:
            return await self.store.ajob_insert(pooled, row)

    def _rows(self, calls: Sequence[Call]) -> list[EnqueueRow]:
        for call in calls:
            if call.task.app is not self:
                raise ConfigurationError(f"{call.task.name} belongs to another App; enqueue it through that App")
        return [call.task._row(call.args, call.kwargs, call.options) for call in calls]

    def enqueue_many(self, calls: Sequence[Call], *, connection: Connection[Any] | None = None) -> list[JobRef]:
        """Insert many jobs (of any tasks) in one statement; transactional like .delay()."""
        calls = list(calls)
        if not calls:
            return []
        rows = self._rows(calls)
        if self._eager is not None:  # pgtasks.testing.eager(): run inline, no database
            return [self._eager.run(call.task, row) for call, row in zip(calls, rows, strict=True)]
        conn = self._sync_target(connection)
        if conn is not None:
            ids = self.store.job_insert_many(conn, rows)
        else:
            with self._sync_pool().connection() as pooled:
                ids = self.store.job_insert_many(pooled, rows)
        return [JobRef(job_id, call.task.name, self) for job_id, call in zip(ids, calls, strict=True)]

    async def aenqueue_many(self, calls: Sequence[Call], *,
                            connection: AsyncConnection[Any] | None = None) -> list[JobRef]:
        """Async twin of enqueue_many()."""
        calls = list(calls)
        if not calls:
            return []
        rows = self._rows(calls)
        if self._eager is not None:  # pgtasks.testing.eager(): run inline, no database
            return [await self._eager.arun(call.task, row) for call, row in zip(calls, rows, strict=True)]
        conn = self._async_target(connection)
        if conn is not None:
            ids = await self.store.ajob_insert_many(conn, rows)
        else:
            pool = await self._async_pool()
            async with pool.connection() as pooled:
                ids = await self.store.ajob_insert_many(pooled, rows)
        return [JobRef(job_id, call.task.name, self) for job_id, call in zip(ids, calls, strict=True)]

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        """The job's row as a dict (args, errors and result as JSON text), or None."""
        with self._sync_pool().connection() as conn:
            return self.store.job_get(conn, job_id)

    # -- schema ------------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied (empty when up to date)."""
        with self.connect() as conn:
            return [m.version for m in migrations.migrate(conn, self.schema)]

    def check_schema(self, conn: Connection[Any]) -> None:
        """Raise SchemaNotMigratedError unless the schema is at this code's migration version."""
        version = self.store.migration_current_version(conn)
        expected = migrations.latest_version()
        if version < expected:
            raise SchemaNotMigratedError(
                f"schema {self.schema!r} is at migration {version}, this pgtasks needs {expected}; "
                "run `pgtasks migrate`"
            )

    # -- worker ------------------------------------------------------------------------------------

    def worker(self, **options: Any) -> Worker:
        """A Worker for this app (see pgtasks.worker.Worker for the options)."""
        from pgtasks.worker import Worker  # noqa: PLC0415 - avoid an import cycle

        return Worker(self, **options)

    def run_worker(self, **options: Any) -> None:
        """Run a worker in this thread until SIGTERM/SIGINT (or the queue drains, with burst=True)."""
        self.worker(**options).run()

    def close(self) -> None:
        """Close the sync pool (call `await app.aclose()` from async code to close the async pool too).

        The embedded server, if any, keeps running for other processes; `pgtasks embedded stop` stops it.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        for loop, apool in list(self._async_pools.items()):
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(apool.close())
                del self._async_pools[loop]
                closer = self._async_pool_closers.pop(loop, None)
                if closer is not None:
                    loop.run_until_complete(cancel_and_wait(closer))

    async def aclose(self) -> None:
        """Close the async pool of the running event loop, and the sync pool."""
        loop = asyncio.get_running_loop()
        apool = self._async_pools.pop(loop, None)
        closer = self._async_pool_closers.pop(loop, None)
        try:
            if apool is not None:
                await apool.close()
        finally:
            await cancel_and_wait(closer)  # closes the pool too, if the close above did not
        await asyncio.to_thread(self.close)
