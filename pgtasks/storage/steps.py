"""Store operations written once, without I/O, and run by a sync or an async driver.

An operation is a generator: it yields a Step (a statement with what to fetch, or a COPY), is
sent the step's result, and returns its value. `run()` drives it on a psycopg Connection,
`arun()` on an AsyncConnection. So the control flow of an operation (the unique-key insert that
retries when the holder finishes in between, the tick that checks overlap before it enqueues)
exists once, and the two faces cannot drift apart. psycopg builds its own sync and async
connections the same way, on a layer of generators.

Both drivers turn psycopg errors into pgtasks errors (`translate_errors`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import AsyncConnection, Connection, errors, sql
from psycopg.rows import dict_row

from pgtasks.core.errors import ConnectionLostError, DatabaseError, PoolExhaustedError, SchemaNotMigratedError
from pgtasks.core.logs import log_event

logger = logging.getLogger("pgtasks.connections")

T = TypeVar("T")
Query = LiteralString | sql.Composed


class Fetch(enum.Enum):
    """What a statement step is answered with."""

    NOTHING = "nothing"  # None
    ONE = "one"  # the first row as a tuple, or None
    ALL = "all"  # every row, as tuples
    ROWCOUNT = "rowcount"  # the number of rows the statement affected
    DICT = "dict"  # the first row as a dict, or None
    DICTS = "dicts"  # every row, as dicts


@dataclass(frozen=True, slots=True)
class Statement:
    query: Query
    params: Mapping[str, Any] | None = None
    fetch: Fetch = Fetch.NOTHING


@dataclass(frozen=True, slots=True)
class CopyIn:
    """COPY ... FROM STDIN of `rows`; answered with None."""

    query: Query
    rows: Iterable[tuple[Any, ...]]


Step = Statement | CopyIn
Operation = Generator[Step, Any, T]


def one(query: Query, params: Mapping[str, Any] | None = None) -> Statement:
    return Statement(query, params, Fetch.ONE)


def every(query: Query, params: Mapping[str, Any] | None = None) -> Statement:
    return Statement(query, params, Fetch.ALL)


def execute(query: Query, params: Mapping[str, Any] | None = None) -> Statement:
    return Statement(query, params, Fetch.NOTHING)


def rowcount(query: Query, params: Mapping[str, Any] | None = None) -> Statement:
    return Statement(query, params, Fetch.ROWCOUNT)


def dict_one(query: Query, params: Mapping[str, Any] | None = None) -> Statement:
    return Statement(query, params, Fetch.DICT)


def dicts(query: Query, params: Mapping[str, Any] | None = None) -> Statement:
    return Statement(query, params, Fetch.DICTS)


# -- operations of one step ---------------------------------------------------------------------


def select_dicts(query: Query, params: Mapping[str, Any] | None = None) -> Operation[list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = yield dicts(query, params)
    return rows


def select_dict(query: Query, params: Mapping[str, Any] | None = None) -> Operation[dict[str, Any] | None]:
    row: dict[str, Any] | None = yield dict_one(query, params)
    return row


def count_affected(query: Query, params: Mapping[str, Any] | None = None) -> Operation[int]:
    count: int = yield rowcount(query, params)
    return count


def statement(query: Query, params: Mapping[str, Any] | None = None) -> Operation[None]:
    yield execute(query, params)


# SQLSTATE classes that mean "the pgtasks objects are not there": undefined table, schema,
# type or function. Seen when code runs against a database that was never migrated.
_MISSING_OBJECT_ERRORS = (errors.UndefinedTable, errors.InvalidSchemaName, errors.UndefinedObject,
                          errors.UndefinedFunction, errors.UndefinedColumn)
# OperationalErrors that end one statement on a connection that is still fine (a lock timeout, a
# cancel), and an error that ends the session (idle_in_transaction_session_timeout), whatever
# psycopg's class hierarchy says of each.
_STATEMENT_ENDED = (errors.LockNotAvailable, errors.QueryCanceled)
_SESSION_ENDED = (errors.IdleInTransactionSessionTimeout,)


@contextlib.contextmanager
def translate_errors(schema: str) -> Iterator[None]:
    """Re-raise psycopg errors as pgtasks errors, keeping the original as __cause__."""
    try:
        yield
    except _MISSING_OBJECT_ERRORS as exc:
        raise SchemaNotMigratedError(
            f"the pgtasks schema {schema!r} is missing or out of date ({exc.diag.message_primary}); "
            f"run `pgtasks migrate` (or App.migrate()) against this database"
        ) from exc
    except _STATEMENT_ENDED as exc:
        raise DatabaseError(f"database error: {exc}") from exc
    except _SESSION_ENDED as exc:
        raise ConnectionLostError(f"database connection failed: {exc}") from exc
    except psycopg.OperationalError as exc:
        # Lost connections, refused connects, and PgBouncer's 08P01 query_wait_timeout.
        if exc.sqlstate == "08P01" and "query_wait_timeout" in str(exc):
            raise PoolExhaustedError(
                f"the connection pooler found no free server connection within its query_wait_timeout ({exc}); "
                "the statement never ran. Give the pooler a bigger pool (PgBouncer default_pool_size) or "
                "use fewer connections (see the connection budget in docs/pgbouncer.md)"
            ) from exc
        raise ConnectionLostError(f"database connection failed: {exc}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"database error: {exc}") from exc


# A prepared statement the server does not have (26000), one it already has under the name psycopg
# picked (42P05): what a pooler that shares backends does to prepared statements. And 0A000
# "cached plan must not change result type": a migration changed a column a prepared statement
# returns.
_PREPARED_STATEMENT_ERRORS = (errors.InvalidSqlStatementName, errors.DuplicatePreparedStatement,
                              errors.FeatureNotSupported)


def _stop_preparing(conn: Connection[Any] | AsyncConnection[Any], exc: psycopg.Error) -> None:
    """After a prepared-statement error, prepare nothing more on `conn`; the error still goes up.

    The statement did not run; the caller's retry (the worker's backoff, or the user's own for a
    .delay()) runs it unprepared. Each connection warns at most once: preparing stays off on it.
    """
    if conn.prepare_threshold is None:
        return
    if isinstance(exc, errors.FeatureNotSupported) and "cached plan" not in str(exc):
        return
    conn.prepare_threshold = None
    log_event(logger, logging.WARNING, "connection.prepared_statements_off", error=str(exc).strip(),
              backend_pid=conn.info.backend_pid,
              action="prepared statements are now off on this connection; if a connection pooler is in "
                     "the path, set PGTASKS_PREPARED_STATEMENTS=off (or App(prepared_statements='off'))")


def _answer(cur: psycopg.Cursor[Any], fetch: Fetch) -> Any:
    if fetch is Fetch.NOTHING:
        return None
    if fetch is Fetch.ROWCOUNT:
        return cur.rowcount
    if fetch in (Fetch.ONE, Fetch.DICT):
        return cur.fetchone()
    return cur.fetchall()


async def _aanswer(cur: psycopg.AsyncCursor[Any], fetch: Fetch) -> Any:
    if fetch is Fetch.NOTHING:
        return None
    if fetch is Fetch.ROWCOUNT:
        return cur.rowcount
    if fetch in (Fetch.ONE, Fetch.DICT):
        return await cur.fetchone()
    return await cur.fetchall()


def _uses_dicts(fetch: Fetch) -> bool:
    return fetch in (Fetch.DICT, Fetch.DICTS)


def _step(conn: Connection[Any], step: Step) -> Any:
    if isinstance(step, CopyIn):
        with conn.cursor().copy(step.query) as copy:
            for row in step.rows:
                copy.write_row(row)
        return None
    if _uses_dicts(step.fetch):
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(step.query, step.params)
            return _answer(cur, step.fetch)
    return _answer(conn.execute(step.query, step.params), step.fetch)


async def _astep(conn: AsyncConnection[Any], step: Step) -> Any:
    if isinstance(step, CopyIn):
        async with conn.cursor().copy(step.query) as copy:
            for row in step.rows:
                await copy.write_row(row)
        return None
    if _uses_dicts(step.fetch):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(step.query, step.params)
            return await _aanswer(cur, step.fetch)
    return await _aanswer(await conn.execute(step.query, step.params), step.fetch)


def run(conn: Connection[Any], operation: Operation[T], *, schema: str, transaction: bool = False) -> T:
    """Drive `operation` on `conn`; with transaction=True inside one transaction (a savepoint if one is open)."""
    with translate_errors(schema), conn.transaction() if transaction else contextlib.nullcontext():
        try:
            step = next(operation)
            while True:
                step = operation.send(_step(conn, step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except _PREPARED_STATEMENT_ERRORS as exc:
            _stop_preparing(conn, exc)
            raise


async def arun(conn: AsyncConnection[Any], operation: Operation[T], *, schema: str, transaction: bool = False) -> T:
    """Async twin of run()."""
    with translate_errors(schema):
        async with conn.transaction() if transaction else contextlib.nullcontext():
            try:
                step = next(operation)
                while True:
                    step = operation.send(await _astep(conn, step))
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            except _PREPARED_STATEMENT_ERRORS as exc:
                _stop_preparing(conn, exc)
                raise
