"""The enqueue seam: what a Task hands its rows to. The database implementation lives here; eager mode
(pgtasks.testing.eager) is the other one."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from psycopg import AsyncConnection, Connection

from pgtasks.client.results import JobRef, JobSource
from pgtasks.client.workflows import WorkflowRef
from pgtasks.core.errors import ConfigurationError
from pgtasks.core.models import EnqueueRow, WorkflowPlan
from pgtasks.storage.connections import refusing_statement_pooling

if TYPE_CHECKING:
    from pgtasks.core.definition import TaskDefinition
    from pgtasks.storage.database import Database
    from pgtasks.storage.store import Store


class Enqueuer(Protocol):
    """Turns validated rows into jobs. `connection` is the caller's own (its transaction), or None."""

    def enqueue(self, task: TaskDefinition[Any, Any], row: EnqueueRow, connection: Connection[Any] | None) -> JobRef:
        ...

    async def aenqueue(self, task: TaskDefinition[Any, Any], row: EnqueueRow,
                       connection: AsyncConnection[Any] | None) -> JobRef:
        ...

    def enqueue_many(self, tasks: Sequence[TaskDefinition[Any, Any]], rows: Sequence[EnqueueRow],
                     connection: Connection[Any] | None) -> list[JobRef]:
        ...

    async def aenqueue_many(self, tasks: Sequence[TaskDefinition[Any, Any]], rows: Sequence[EnqueueRow],
                            connection: AsyncConnection[Any] | None) -> list[JobRef]:
        ...

    def enqueue_workflow(self, plan: WorkflowPlan, connection: Connection[Any] | None) -> WorkflowRef:
        ...

    async def aenqueue_workflow(self, plan: WorkflowPlan, connection: AsyncConnection[Any] | None) -> WorkflowRef:
        ...


class ConnectionBinding:
    """The connection `.delay()` joins inside `app.bind(conn)` / `app.transaction()`: one per App,
    kept in a context variable so threads and asyncio tasks each see their own."""

    def __init__(self, name: str) -> None:
        self._bound: contextvars.ContextVar[Connection[Any] | AsyncConnection[Any] | None] = (
            contextvars.ContextVar(name, default=None))

    def current(self) -> Connection[Any] | AsyncConnection[Any] | None:
        return self._bound.get()

    @contextlib.contextmanager
    def bind(self, conn: Connection[Any] | AsyncConnection[Any]) -> Iterator[None]:
        if not isinstance(conn, Connection | AsyncConnection):
            raise ConfigurationError(f"bind({conn!r}): expected a psycopg Connection or AsyncConnection")
        token = self._bound.set(conn)
        try:
            yield
        finally:
            self._bound.reset(token)

    def sync_target(self, connection: Connection[Any] | None) -> Connection[Any] | None:
        """The connection a sync enqueue writes through: the one given, else the bound one, else None (a pool)."""
        conn = connection if connection is not None else self._bound.get()
        if isinstance(conn, AsyncConnection):
            raise ConfigurationError(
                "an AsyncConnection is bound here; use `await task.adelay(...)` / `aapply_async` "
                "(the sync .delay() cannot use an async connection)"
            )
        if conn is not None and not isinstance(conn, Connection):
            raise ConfigurationError(f"connection={conn!r}: expected a psycopg Connection")
        return conn

    def async_target(self, connection: AsyncConnection[Any] | None) -> AsyncConnection[Any] | None:
        """Async twin of sync_target()."""
        conn = connection if connection is not None else self._bound.get()
        if isinstance(conn, Connection):
            raise ConfigurationError(
                "a sync Connection is bound here; use `task.delay(...)` (adelay needs an AsyncConnection)"
            )
        if conn is not None and not isinstance(conn, AsyncConnection):
            raise ConfigurationError(f"connection={conn!r}: expected a psycopg AsyncConnection")
        return conn


class DatabaseEnqueuer:
    """Inserts jobs through the caller's connection, else one from the App's pools."""

    def __init__(self, database: Database, store: Store, binding: ConnectionBinding, source: JobSource) -> None:
        self.database = database
        self.store = store
        self.binding = binding
        self.source = source  # what the JobRefs it returns read their results from

    def _ref(self, job_id: int, task: TaskDefinition[Any, Any]) -> JobRef:
        return JobRef(job_id, task.name, self.source)

    @contextlib.contextmanager
    def connection(self, connection: Connection[Any] | None) -> Iterator[Connection[Any]]:
        conn = self.binding.sync_target(connection)
        if conn is not None:
            yield conn
            return
        with self.database.pool().connection() as pooled:
            yield pooled

    @contextlib.asynccontextmanager
    async def aconnection(self, connection: AsyncConnection[Any] | None) -> AsyncIterator[AsyncConnection[Any]]:
        conn = self.binding.async_target(connection)
        if conn is not None:
            yield conn
            return
        pool = await self.database.apool()
        async with pool.connection() as pooled:
            yield pooled

    # The one-job faces skip the connection() context manager: .delay() is the hot path of a web
    # request, and a generator-based context manager costs more calls than the two branches.
    def enqueue(self, task: TaskDefinition[Any, Any], row: EnqueueRow, connection: Connection[Any] | None) -> JobRef:
        conn = self.binding.sync_target(connection)
        if conn is not None:
            return self._ref(self.store.job_insert(conn, row), task)
        with self.database.pool().connection() as pooled:
            return self._ref(self.store.job_insert(pooled, row), task)

    async def aenqueue(self, task: TaskDefinition[Any, Any], row: EnqueueRow,
                       connection: AsyncConnection[Any] | None) -> JobRef:
        conn = self.binding.async_target(connection)
        if conn is not None:
            return self._ref(await self.store.ajob_insert(conn, row), task)
        pool = await self.database.apool()
        async with pool.connection() as pooled:
            return self._ref(await self.store.ajob_insert(pooled, row), task)

    def enqueue_many(self, tasks: Sequence[TaskDefinition[Any, Any]], rows: Sequence[EnqueueRow],
                     connection: Connection[Any] | None) -> list[JobRef]:
        with self.connection(connection) as conn:
            ids = self.store.job_insert_many(conn, rows)
        return self._refs(ids, tasks)

    async def aenqueue_many(self, tasks: Sequence[TaskDefinition[Any, Any]], rows: Sequence[EnqueueRow],
                            connection: AsyncConnection[Any] | None) -> list[JobRef]:
        async with self.aconnection(connection) as conn:
            ids = await self.store.ajob_insert_many(conn, rows)
        return self._refs(ids, tasks)

    def _refs(self, ids: Sequence[int], tasks: Sequence[TaskDefinition[Any, Any]]) -> list[JobRef]:
        source = self.source  # one attribute lookup and no method call a job: a bulk call makes thousands
        return [JobRef(job_id, task.name, source) for job_id, task in zip(ids, tasks, strict=True)]

    def _workflow_ref(self, plan: WorkflowPlan, workflow_id: int, ids: Sequence[int]) -> WorkflowRef:
        return WorkflowRef(workflow_id, self.source, tuple(ids[s] for s in plan.result_steps),
                           tuple(plan.steps[s].task for s in plan.result_steps), plan.result_list, tuple(ids))

    def enqueue_workflow(self, plan: WorkflowPlan, connection: Connection[Any] | None) -> WorkflowRef:
        """Insert every step of `plan` (and its workflows row) in one transaction: the caller's, if any."""
        with self.connection(connection) as conn:
            workflow_id, ids = self.store.workflow_insert(conn, plan)
        return self._workflow_ref(plan, workflow_id, ids)

    async def aenqueue_workflow(self, plan: WorkflowPlan, connection: AsyncConnection[Any] | None) -> WorkflowRef:
        async with self.aconnection(connection) as conn:
            workflow_id, ids = await self.store.aworkflow_insert(conn, plan)
        return self._workflow_ref(plan, workflow_id, ids)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection[Any]]:
        """A transaction on a pooled connection, bound so every .delay() inside joins it."""
        with refusing_statement_pooling(), self.database.pool().connection() as conn, conn.transaction(), \
                self.binding.bind(conn):
            yield conn

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        pool = await self.database.apool()
        with refusing_statement_pooling():
            async with pool.connection() as conn, conn.transaction():
                with self.binding.bind(conn):
                    yield conn
