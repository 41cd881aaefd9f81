"""The App: the composition root. It builds the registry, the database, the store and the enqueuer, and
hands them to tasks, workers and results; none of those import it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack, overload

from psycopg import AsyncConnection, Connection

from pgtasks.client.blueprint import Blueprint, BlueprintTask, register_loader
from pgtasks.client.canvas import Canvas, Signature, StepOptions
from pgtasks.client.enqueue import ConnectionBinding, DatabaseEnqueuer, Enqueuer
from pgtasks.client.results import JobRef, read_job
from pgtasks.client.task import Call, JobOptions, Task, TaskConfig, aenqueue_calls, enqueue_calls
from pgtasks.core.byname import NameOnlyTask
from pgtasks.core.crontab import Crontab
from pgtasks.core.definition import ExceptionTypes, TaskDefinition
from pgtasks.core.discovery import Autodiscover, Include, check_related_name, import_tasks_module
from pgtasks.core.errors import ConfigurationError
from pgtasks.core.hooks import Hook, Hooks, WorkerHook
from pgtasks.core.limits import Limit, QueueLimits, Rate
from pgtasks.core.logs import log_event
from pgtasks.core.options import DEFAULT_MAX_ATTEMPTS, EnqueueOptions
from pgtasks.core.registry import Registry, default_task_name
from pgtasks.core.retry import RetryPolicy
from pgtasks.core.schedules import DEFAULT_CATCH_UP_LIMIT, PeriodicSchedule, resolve_timezone
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

logger = logging.getLogger("pgtasks.app")


class App:
    """A pgtasks application: tasks, database settings and connection pools.

    `database_url` defaults to $PGTASKS_DATABASE_URL, then to an embedded PostgreSQL (which is
    migrated automatically); `schema` defaults to $PGTASKS_SCHEMA, then to "pgtasks". Nothing
    connects until first use, so creating an App at import time is free.

    `include=["myproject.billing.tasks", ...]` names modules that declare tasks (with
    `@app.task`, or on a pgtasks.Blueprint); they are imported by load_tasks(), which a worker
    runs when it starts (see load_tasks() for when else), not here, so they may import this App.

    `timezone="Europe/Paris"` (an IANA name or a tzinfo; default UTC) is the zone cron schedules
    are read in when `@app.periodic` gives no timezone=, like Celery's `timezone` setting; an
    unknown name raises ConfigurationError here.

    `prepared_statements` ("auto", the default; "on" or True; "off" or False; or
    $PGTASKS_PREPARED_STATEMENTS) says whether connections prepare their statements on the server:
    auto does so on each connection that reaches PostgreSQL itself, never behind a pooler such as
    PgBouncer; "off" from the argument or the variable wins (docs/pgbouncer.md, "Prepared statements").
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
        include: Sequence[str] = (),
        timezone: str | tzinfo | None = None,
        prepared_statements: str | bool | None = None,
    ) -> None:
        self.schema = validate_schema_name(schema or os.environ.get(SCHEMA_ENV) or "pgtasks")
        try:
            zone = resolve_timezone(timezone)  # checked first: a typo fails here, not at the first schedule
        except ConfigurationError as exc:
            raise ConfigurationError(f"App(timezone=...): {exc}") from None
        self.database = Database(database_url, schema=self.schema, listen_dsn=listen_dsn, pool_size=pool_size,
                                 application_name=application_name, prepared_statements=prepared_statements,
                                 embedded_dir=Path(embedded_dir) if embedded_dir is not None else None)
        self.store = Store(self.schema)
        self.registry: Registry[Task[Any, Any]] = Registry()
        self.registry.timezone = zone
        self.binding = ConnectionBinding(f"pgtasks_bound_{id(self)}")
        self._database_enqueuer = DatabaseEnqueuer(self.database, self.store, self.binding, source=self)
        # Where .delay() sends its rows; pgtasks.testing.eager() swaps in one that runs them inline.
        self.enqueuer: Enqueuer = self._database_enqueuer
        if isinstance(include, str):
            raise ConfigurationError(f"include={include!r}: expected a list of module names, e.g. [{include!r}]")
        self._to_import: list[Include | Autodiscover] = []
        self._imported: dict[str, ModuleType] = {}
        self._loading = False
        for module in include:
            self._plan(Include(module))

    # -- configuration ---------------------------------------------------------------------------

    @property
    def timezone(self) -> tzinfo:
        """The time zone of cron schedules that give no timezone= (App(timezone=...); default UTC)."""
        return self.registry.timezone

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
    def prepared_statements(self) -> str:
        """"auto", "on" or "off": the resolved App(prepared_statements=...) / $PGTASKS_PREPARED_STATEMENTS."""
        return self.database.preparing.setting.value

    @property
    def embedded_dir(self) -> Path | None:
        return self.database.embedded_dir

    def use_database_url(self, database_url: str) -> None:
        """Point the app at another database (the CLI's --database-url); only before first use."""
        self.database.use_database_url(database_url)

    # -- the registry ------------------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """The registered tasks by name, after importing the include= / autodiscover() modules."""
        if self._to_import:
            self.load_tasks()
        return self.registry.tasks

    # -- tasks declared elsewhere: blueprints, include= and autodiscover() ------------------------------

    def add_blueprint(self, blueprint: Blueprint) -> None:
        """Register a pgtasks.Blueprint's tasks on this App (once; adding it again changes nothing).

        Its tasks then enqueue through this App, and this App's workers run them. A name already
        registered raises DuplicateTaskError.
        """
        if not isinstance(blueprint, Blueprint):
            raise ConfigurationError(f"add_blueprint({blueprint!r}): expected a pgtasks.Blueprint")

        def register(func: Callable[..., Any], config: TaskConfig) -> Task[Any, Any]:
            task: Task[Any, Any] = Task(self, func, config)
            self.registry.add_task(task)
            return task

        blueprint.add_to(self.registry.tasks, register)

    def autodiscover(self, packages: Iterable[str] | Callable[[], Iterable[str]], *,
                     related_name: str = "tasks") -> None:
        """Import the `tasks` module (`related_name`) of each package that has one, as Celery's
        autodiscover_tasks() does: `app.autodiscover(["myproject.billing", "myproject.shipping"])`.

        Imported by load_tasks(), like include=; a package without that module is skipped, one that
        cannot be imported is an error. `packages` may be a callable returning them, called then
        (for Django: `lambda: [c.name for c in django.apps.apps.get_app_configs()]`).
        """
        self._plan(Autodiscover(packages, check_related_name(related_name)))

    def _plan(self, source: Include | Autodiscover) -> None:
        """Import `source`'s modules at load_tasks(); add the Blueprints of those already imported now,
        so this App, the newest, is the one they enqueue through (each test's App, say)."""
        self._to_import.append(source)
        for name in source.imported():
            if name not in self._imported:
                self._add_module(sys.modules[name])
        register_loader(self, True)

    def load_tasks(self) -> list[str]:
        """Import the modules of include= and autodiscover() not imported yet, and add every
        pgtasks.Blueprint each holds at its top level; returns the modules imported now.

        Runs by itself when a worker is built (app.worker(), `pgtasks worker`), when the `pgtasks`
        command or the pytest plugin loads the App, when app.tasks is read, at send_task() and
        signature(), and when a Blueprint's task is used before any App added its blueprint (a
        module already imported when it is named has its Blueprints added at once). A
        module that fails to import raises ConfigurationError naming it and the cause (the
        original exception is the __cause__); the modules after it stay pending. A task name
        registered twice raises DuplicateTaskError.
        """
        if self._loading:  # a module being imported reads app.tasks: it sees what is registered so far
            return []
        loaded: list[str] = []
        self._loading = True
        try:
            while self._to_import:
                source = self._to_import[0]
                for name in source.modules():
                    if name not in self._imported:
                        self._add_module(import_tasks_module(name, source.origin))
                        loaded.append(name)
                self._to_import.pop(0)
        finally:
            self._loading = False
            register_loader(self, bool(self._to_import))
        if loaded:
            log_event(logger, logging.INFO, "app.tasks_loaded", modules=",".join(loaded),
                      tasks=len(self.registry.tasks))
        return loaded

    def _add_module(self, module: ModuleType) -> None:
        self._imported[module.__name__] = module
        for value in list(vars(module).values()):
            if isinstance(value, Blueprint):
                self.add_blueprint(value)

    def _own_task(self, task: T) -> T:
        """The task this App registered for `task`: a Blueprint's task becomes this App's own (the
        blueprint is added first if it was not)."""
        if isinstance(task, BlueprintTask):
            own = self.registry.tasks.get(task.name)
            if own is None or own.func is not task.func:
                self.add_blueprint(task.blueprint)
                own = self.registry.tasks[task.name]
            return own  # type: ignore[return-value] # the App's own Task of that blueprint task
        return task

    @property
    def schedules(self) -> Mapping[str, PeriodicSchedule]:
        """The periodic schedules by name, after importing the include= / autodiscover() modules."""
        if self._to_import:
            self.load_tasks()
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
        rate_limit: str | Rate | Limit | None = None, retry_on: ExceptionTypes | None = None,
        dont_retry_on: ExceptionTypes | None = None, soft_timeout: float | None = None,
        on_success: Hook | None = None, on_failure: Hook | None = None, on_retry: Hook | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(  # type: ignore[misc] # mypy cannot match ParamSpec-bound overloads to one implementation
        self, func: Callable[P, R] | None = None, /, *, name: str | None = None, queue: str = "default",
        priority: int = 0, max_attempts: int = DEFAULT_MAX_ATTEMPTS, retry: RetryPolicy | None = None,
        timeout: float | None = None, store_result: bool = True, unique: Unique | bool | None = None,
        concurrency: int | Limit | None = None, rate_limit: str | Rate | Limit | None = None,
        retry_on: ExceptionTypes | None = None, dont_retry_on: ExceptionTypes | None = None,
        soft_timeout: float | None = None, on_success: Hook | None = None, on_failure: Hook | None = None,
        on_retry: Hook | None = None,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a task: `@app.task` or `@app.task(queue="mail", timeout=30)`.

        **Every exception the task raises is retried by default**, up to `max_attempts` (20) in
        all, with `retry`'s backoff (`pgtasks.Backoff()`: 1 s doubling, at most an hour apart).
        Celery fails a task at once unless it asks for retries; here a task that must not run
        twice says so: `retry_on=(ConnectionError, TimeoutError)` retries only those (an
        exception class or a tuple; `retry_on=()` none), `dont_retry_on=(ValueError,)` never
        those (it wins over retry_on), `max_attempts=1` never anything. A failure that is not
        retried ends the job `discarded` at once, its error recorded. `raise pgtasks.Retry(...)`
        always retries while attempts are left.

        `timeout` fails an attempt after that many seconds; `soft_timeout` (less than it) warns
        the task first: SoftTimeLimitExceeded is raised inside an async task, and
        `current_job().soft_timed_out` turns True for a sync one to poll.

        `on_success`, `on_failure` (the job ended discarded) and `on_retry` are this task's
        handlers: `handler(event: pgtasks.JobEvent)`, sync or async, run by the worker like the
        App's hooks (docs/operations.md).

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
                                   concurrency=concurrency, rate_limit=rate_limit, retry_on=retry_on,
                                   dont_retry_on=dont_retry_on, soft_timeout=soft_timeout, on_success=on_success,
                                   on_failure=on_failure, on_retry=on_retry)

        def register(fn: Callable[P, R]) -> Task[P, R]:
            if isinstance(fn, TaskDefinition):
                raise ConfigurationError(f"{fn.name} is already a task; apply @app.task once")
            named = dataclasses.replace(config, name=name or default_task_name(fn))
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

    def on_retry(self, hook: Hook) -> Hook:
        """Register a hook to run when an attempt failed and the job will run again (an exception
        that is retried, or `raise pgtasks.Retry`); event.error and event.retry_in are set."""
        self.registry.hooks.retry.append(hook)
        return hook

    def worker_ready(self, hook: WorkerHook) -> WorkerHook:
        """Register `hook(event: pgtasks.WorkerEvent)` to run in each worker process once it has
        started, before it claims its first job (set up what tasks use). If it raises, the worker
        stops without claiming anything and the exception propagates."""
        self.registry.hooks.worker_ready.append(hook)
        return hook

    def worker_shutdown(self, hook: WorkerHook) -> WorkerHook:
        """Register a hook to run in each worker process as it stops, after its last job finished
        or was put back (tear down); it runs for every worker whose worker_ready hooks ran."""
        self.registry.hooks.worker_shutdown.append(hook)
        return hook

    def periodic(
        self, *, cron: str | Crontab | None = None, every: timedelta | float | None = None,
        args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, timezone: str | tzinfo | None = None,
        catch_up: str = "latest", catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT, name: str | None = None,
        overlap: bool = True, queue: str | None = None, priority: int | None = None,
        expires: float | timedelta | None = None,
    ) -> Callable[[T], T]:
        """Run a task on a schedule: `@app.periodic(cron="*/5 * * * *")` placed above `@app.task`.

        Give `cron`, a string in standard cron syntax (5 fields, or 6 with seconds first) or a
        `pgtasks.crontab(...)` (Celery's arguments and meaning: a day must match both
        day_of_month and day_of_week, where a cron string needs either), evaluated in `timezone`
        (IANA name; default the App's timezone, UTC unless App(timezone=...)); or `every` (a
        timedelta of at least a second). Only the elected leader enqueues, and each tick at most
        once. `catch_up` decides what runs after downtime: "latest" (default) runs the most
        recent missed tick once, "skip" runs none, "all" runs each missed tick, the newest
        `catch_up_limit` of them. `overlap=False` skips a tick while the job of the previous
        tick is still queued or running. `queue`, `priority` and `expires` (seconds or a
        timedelta after each job is enqueued) override the task's for this schedule's jobs,
        checked as .apply_async() checks them. See docs/periodic.md.
        """
        return self._scheduling(self.registry.periodic(cron=cron, every=every, args=args, kwargs=kwargs,
                                  timezone=timezone, catch_up=catch_up, catch_up_limit=catch_up_limit, name=name,
                                  overlap=overlap, queue=queue, priority=priority, expires=expires))

    def _scheduling(self, schedule: Callable[[T], T]) -> Callable[[T], T]:
        """`schedule` for this App's own task of a Blueprint's task (see _own_task); returns the task given."""

        def register(task: T) -> T:
            schedule(self._own_task(task))
            return task

        return register

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
            # A task known by name only belongs to no App: any App can enqueue it.
            if not self.registry.owns(call.task) and not isinstance(call.task, NameOnlyTask):
                raise ConfigurationError(f"{call.task.name} belongs to another App; enqueue it through that App")
        return calls

    def enqueue_many(self, calls: Sequence[Call], *, connection: Connection[Any] | None = None) -> list[JobRef]:
        """Insert many jobs (of any tasks) in one statement; transactional like .delay()."""
        return enqueue_calls(self.enqueuer, self._own(calls), connection)

    async def aenqueue_many(self, calls: Sequence[Call], *,
                            connection: AsyncConnection[Any] | None = None) -> list[JobRef]:
        """Async twin of enqueue_many()."""
        return await aenqueue_calls(self.enqueuer, self._own(calls), connection)

    def send_task(self, name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
                  connection: Connection[Any] | None = None, link: Canvas | list[Signature] | None = None,
                  link_error: Signature | None = None, **options: Unpack[JobOptions]) -> JobRef:
        """Enqueue a job of the task named `name`, which this process may not define (Celery's
        send_task): `app.send_task("billing.charge", args=[42], kwargs={"cents": 500}, queue="billing")`.

        Transactional like .delay(): it joins `connection`, else the transaction bound by
        app.bind() / app.transaction(). Options as apply_async's (countdown or eta, expires,
        priority, queue, max_attempts, unique_key; link and link_error make it a workflow's
        first step). Returns its JobRef.

        If this App defines the task, that definition is used: arguments bound and validated
        against its signature, its defaults (queue, priority, max_attempts), unique key and
        limits, exactly as `task.apply_async(...)`. If not, nothing here knows the task: only the
        options and the JSON-encodability of the values are checked; the argument count, names and
        types are checked by the worker that runs it (a mismatch fails the attempt with
        TaskArgumentError). The defaults are then every task's, so pass `queue=` if the task runs
        in another queue than "default"; no unique key (unless `unique_key=`) and no per-key limit
        key can be computed (docs/tasks.md, "Enqueue by name").
        """
        return self._named(name, args, kwargs, EnqueueOptions(**options)).apply_async(
            connection=connection, link=link, link_error=link_error)

    async def asend_task(self, name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
                         connection: AsyncConnection[Any] | None = None,
                         link: Canvas | list[Signature] | None = None, link_error: Signature | None = None,
                         **options: Unpack[JobOptions]) -> JobRef:
        """Async twin of send_task()."""
        return await self._named(name, args, kwargs, EnqueueOptions(**options)).aapply_async(
            connection=connection, link=link, link_error=link_error)

    def signature(self, name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
                  immutable: bool = False, **options: Unpack[StepOptions]) -> Signature:
        """A signature of the task named `name` (Celery's app.signature): a step of a chain, group or
        chord, or a job for `.delay()` / app.enqueue_many(), whether or not this process defines it.

        With a local definition it is that task's `.s(...)` (`.si(...)` with immutable=True). Without
        one, its arguments are checked as send_task() checks them, and as a step that receives the
        previous result it gets it as its first positional argument, as a local step does.
        """
        return self._named(name, args, kwargs, EnqueueOptions(**options), immutable=bool(immutable))

    def _named(self, name: str, args: Iterable[Any], kwargs: Mapping[str, Any] | None, options: EnqueueOptions,
               *, immutable: bool = False) -> Signature:
        if isinstance(args, str | bytes | Mapping) or not isinstance(args, Iterable):
            raise ConfigurationError(f"args={args!r}: expected a list or tuple of positional arguments; "
                                     "pass keyword arguments as kwargs={...}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigurationError(f"kwargs={kwargs!r}: expected a dict of keyword arguments")
        local = self.tasks.get(name) if isinstance(name, str) else None
        task = local if local is not None else NameOnlyTask(name)
        return Signature(task, tuple(args), dict(kwargs or {}), options, immutable=immutable, host=self)

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        """The job's row as a dict (args, errors and result as JSON text), or None."""
        return read_job(self, job_id)

    # -- schema and workers ---------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied (empty when up to date)."""
        with self.connect() as conn:
            return [m.version for m in migrations.migrate(conn, self.schema)]

    def worker(self, **options: Any) -> Worker:
        """A Worker for this app; options as WorkerConfig's (queues, concurrency, poll_interval, ...).
        Imports the include= / autodiscover() modules first (load_tasks())."""
        self.load_tasks()
        return Worker(self, **options)

    def run_worker(self, **options: Any) -> None:
        """Run a worker in this thread until SIGTERM/SIGINT (or the queue drains, with burst=True)."""
        self.worker(**options).run()

    def close(self) -> None:
        """Close the sync pool (call `await app.aclose()` from async code to close the async pool too).

        A Blueprint's task no longer asks a closed App to import its include= / autodiscover() modules.

        The embedded server, if any, keeps running for other processes; `pgtasks embedded stop` stops it.
        """
        register_loader(self, False)
        self.database.close()

    async def aclose(self) -> None:
        """Close the async pool of the running event loop, and the sync pool."""
        await self.database.aclose()

