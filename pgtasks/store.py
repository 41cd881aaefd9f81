"""The one place that executes SQL: a method per named query, psycopg errors turned into pgtasks errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, LiteralString

import msgspec
import psycopg
from psycopg import AsyncConnection, Connection, errors, sql

from pgtasks.errors import ConnectionLostError, DatabaseError, PoolExhaustedError, SchemaNotMigratedError
from pgtasks.models import ClaimedJob, EnqueueRow, Outcome
from pgtasks.queries import queries_for

_ENCODER = msgspec.json.Encoder()

# SQLSTATE classes that mean "the pgtasks objects are not there": undefined table, schema,
# type or function. Seen when code runs against a database that was never migrated.
_MISSING_OBJECT_ERRORS = (errors.UndefinedTable, errors.InvalidSchemaName, errors.UndefinedObject,
                          errors.UndefinedFunction, errors.UndefinedColumn)


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


def _insert_params(row: EnqueueRow) -> dict[str, Any]:
    return {
        "task": row.task, "queue": row.queue, "args": row.args, "priority": row.priority,
        "max_attempts": row.max_attempts, "run_at": row.run_at, "delay": row.delay,
        "expires_at": row.expires_at, "expires_in": row.expires_in, "unique_key": row.unique_key,
    }


def _insert_many_params(rows: Sequence[EnqueueRow]) -> dict[str, Any]:
    return {
        "tasks": [r.task for r in rows], "queues": [r.queue for r in rows], "args": [r.args for r in rows],
        "priorities": [r.priority for r in rows], "max_attempts": [r.max_attempts for r in rows],
        "run_ats": [r.run_at for r in rows], "delays": [r.delay for r in rows],
        "expires_ats": [r.expires_at for r in rows], "expires_ins": [r.expires_in for r in rows],
        "unique_keys": [r.unique_key for r in rows],
    }


def _outcome_params(outcomes: Sequence[Outcome], now: datetime | None) -> dict[str, Any]:
    return {
        "ids": [o.job_id for o in outcomes],
        "claims": [o.claims for o in outcomes],
        "states": [o.state.value for o in outcomes],
        "retry_ins": [o.retry_in for o in outcomes],
        "attempt_deltas": [o.attempt_delta for o in outcomes],
        "errors": [None if o.error is None else _ENCODER.encode(o.error).decode() for o in outcomes],
        "results": [None if o.result is None else o.result.decode() for o in outcomes],
        "now": now,
    }


def _ids_in_input_order(rows: Sequence[EnqueueRow], returned: list[tuple[int, str | None]]) -> list[int | None]:
    """Map RETURNING rows (input order, duplicates missing) back onto the input rows."""
    by_key = {key: job_id for job_id, key in returned if key is not None}
    plain = iter(job_id for job_id, key in returned if key is None)
    return [next(plain) if row.unique_key is None else by_key.get(row.unique_key) for row in rows]


def _missing(ids: list[int | None]) -> list[int]:
    return [index for index, job_id in enumerate(ids) if job_id is None]


def _holder_id(row: EnqueueRow, found: tuple[Any, ...] | None) -> int:
    if found is None:
        # The holder finished between our insert and the lookup; a retry would insert afresh.
        raise DatabaseError(f"unique_key {row.unique_key!r}: the duplicate's holder finished meanwhile; enqueue again")
    return int(found[0])


class Store:
    """Named queries for one schema. Sync methods take a Connection, `a`-prefixed ones an AsyncConnection."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.q: dict[str, LiteralString] = queries_for(schema)

    def errors(self) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self.schema)

    # -- enqueue -------------------------------------------------------------------------------

    def job_insert(self, conn: Connection[Any], row: EnqueueRow) -> int:
        with self.errors():
            found = conn.execute(self.q["job_insert"], _insert_params(row)).fetchone()
            if found is None:  # a live job already holds this unique_key: return that one
                found = conn.execute(self.q["job_get_id_by_unique_key"], {"unique_key": row.unique_key}).fetchone()
        return _holder_id(row, found)

    async def ajob_insert(self, conn: AsyncConnection[Any], row: EnqueueRow) -> int:
        with self.errors():
            cur = await conn.execute(self.q["job_insert"], _insert_params(row))
            found = await cur.fetchone()
            if found is None:
                cur = await conn.execute(self.q["job_get_id_by_unique_key"], {"unique_key": row.unique_key})
                found = await cur.fetchone()
        return _holder_id(row, found)

    def job_insert_many(self, conn: Connection[Any], rows: Sequence[EnqueueRow]) -> list[int]:
        with self.errors():
            returned = conn.execute(self.q["job_insert_many"], _insert_many_params(rows)).fetchall()
            ids = _ids_in_input_order(rows, returned)
            for index in _missing(ids):
                holder = conn.execute(self.q["job_get_id_by_unique_key"], {"unique_key": rows[index].unique_key})
                ids[index] = _holder_id(rows[index], holder.fetchone())
        return [int(i) for i in ids if i is not None]

    async def ajob_insert_many(self, conn: AsyncConnection[Any], rows: Sequence[EnqueueRow]) -> list[int]:
        with self.errors():
            cur = await conn.execute(self.q["job_insert_many"], _insert_many_params(rows))
            ids = _ids_in_input_order(rows, await cur.fetchall())
            for index in _missing(ids):
                cur = await conn.execute(self.q["job_get_id_by_unique_key"], {"unique_key": rows[index].unique_key})
                ids[index] = _holder_id(rows[index], await cur.fetchone())
        return [int(i) for i in ids if i is not None]

    # -- worker hot path -----------------------------------------------------------------------

    async def job_fetch_available(
        self, conn: AsyncConnection[Any], *, queues: Sequence[str], limit: int, worker_id: str,
        now: datetime | None = None,
    ) -> list[ClaimedJob]:
        params = {"queues": list(queues), "limit": limit, "worker_id": worker_id, "now": now}
        with self.errors():
            cur = await conn.execute(self.q["job_fetch_available"], params)
            rows = await cur.fetchall()
        return [ClaimedJob(*row) for row in rows]

    async def job_set_outcome_many(
        self, conn: AsyncConnection[Any], outcomes: Sequence[Outcome], now: datetime | None = None
    ) -> set[int]:
        with self.errors():
            cur = await conn.execute(self.q["job_set_outcome_many"], _outcome_params(outcomes, now))
            return {int(row[0]) for row in await cur.fetchall()}

    # -- reads ---------------------------------------------------------------------------------

    def job_get(self, conn: Connection[Any], job_id: int) -> dict[str, Any] | None:
        with self.errors():
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            return cur.execute(self.q["job_get"], {"id": job_id}).fetchone()

    async def ajob_get(self, conn: AsyncConnection[Any], job_id: int) -> dict[str, Any] | None:
        with self.errors():
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            await cur.execute(self.q["job_get"], {"id": job_id})
            return await cur.fetchone()

    async def job_count_pending(self, conn: AsyncConnection[Any], queues: Sequence[str]) -> int:
        with self.errors():
            cur = await conn.execute(self.q["job_count_pending"], {"queues": list(queues)})
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- migrations ------------------------------------------------------------------------------

    def migration_current_version(self, conn: Connection[Any]) -> int:
        with self.errors():
            row = conn.execute(self.q["migration_current_version"]).fetchone()
        return int(row[0]) if row else 0

    async def amigration_current_version(self, conn: AsyncConnection[Any]) -> int:
        with self.errors():
            cur = await conn.execute(self.q["migration_current_version"])
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- connection probes and LISTEN/NOTIFY (pgtasks.poolmode, the notifier; issue 4) ------------

    async def abackend_pid(self, conn: AsyncConnection[Any]) -> int:
        """pg_backend_pid() of the server process running this statement."""
        with self.errors():
            cur = await conn.execute(self.q["backend_pid_get"])
            row = await cur.fetchone()
        assert row is not None  # SELECT of a function always returns one row
        return int(row[0])

    async def achannel_listen(self, conn: AsyncConnection[Any], channel: str) -> None:
        with self.errors():
            await conn.execute(sql.SQL(self.q["channel_listen"]).format(identifier=sql.Identifier(channel)))

    async def achannel_unlisten(self, conn: AsyncConnection[Any], channel: str) -> None:
        with self.errors():
            await conn.execute(sql.SQL(self.q["channel_unlisten"]).format(identifier=sql.Identifier(channel)))

    async def achannel_notify(self, conn: AsyncConnection[Any], channel: str, payload: str) -> None:
        with self.errors():
            await conn.execute(self.q["channel_notify"], {"channel": channel, "payload": payload})

    async def job_release_unknown_claims(
        self, conn: AsyncConnection[Any], *, worker_id: str, known_ids: Sequence[int]
    ) -> list[int]:
        """Put back jobs `worker_id` claimed in a fetch whose reply it never got; returns their ids."""
        with self.errors():
            cur = await conn.execute(self.q["job_release_unknown_claims"],
                                     {"worker_id": worker_id, "known_ids": list(known_ids)})
            return [int(row[0]) for row in await cur.fetchall()]
