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
from pgtasks.models import (
    ClaimedJob,
    EnqueueRow,
    FireResult,
    LastFire,
    LeaderLease,
    Outcome,
    RescuedJob,
    WorkerInfo,
)
from pgtasks.queries import queries_for
from pgtasks.store_ops import OpsStoreMixin

_ENCODER = msgspec.json.Encoder()

# SQLSTATE classes that mean "the pgtasks objects are not there": undefined table, schema,
# type or function. Seen when code runs against a database that was never migrated.
_MISSING_OBJECT_ERRORS = (errors.UndefinedTable, errors.InvalidSchemaName, errors.UndefinedObject,
                          errors.UndefinedFunction, errors.UndefinedColumn)

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
        # OperationalErrors that end one statement on a connection that is still fine (a lock
        # timeout, a cancel): not a lost connection, whatever psycopg's class hierarchy says.
        raise DatabaseError(f"database error: {exc}") from exc
    except _SESSION_ENDED as exc:
        # The server ended the session (idle_in_transaction_session_timeout): the connection is gone.
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


def _insert_params(row: EnqueueRow) -> dict[str, Any]:
    return {
        "task": row.task, "queue": row.queue, "args": row.args, "priority": row.priority,
        "max_attempts": row.max_attempts, "run_at": row.run_at, "delay": row.delay,
        "expires_at": row.expires_at, "expires_in": row.expires_in, "unique_key": row.unique_key,
    }


def _runs_now(row: EnqueueRow) -> bool:
    """No unique_key, eta, countdown or expiry: the column defaults say the rest (job_insert_now)."""
    return (row.unique_key is None and row.run_at is None and row.delay is None and row.expires_at is None
            and row.expires_in is None)


def _insert_now_params(row: EnqueueRow) -> dict[str, Any]:
    return {"task": row.task, "queue": row.queue, "args": row.args, "priority": row.priority,
            "max_attempts": row.max_attempts}


def _insert_many_now_params(rows: Sequence[EnqueueRow]) -> dict[str, Any]:
    # args is JSON text already: embedded as is, not re-encoded as a string.
    payload = [{"task": r.task, "queue": r.queue, "args": msgspec.Raw(r.args), "priority": r.priority,
                "max_attempts": r.max_attempts} for r in rows]
    return {"rows": _ENCODER.encode(payload).decode()}


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


# -- bulk enqueue by COPY (job_reserve_ids + job_copy_now) --------------------------------------
# From this many rows on, job_insert_many's common case streams the rows by COPY; below it the
# one-statement JSON insert is as fast or faster (COPY costs one more round trip; measured
# A/B: even at 200 rows, 8% faster at 500, 20% at 2,000, 30% at 5,000).
COPY_MIN_ROWS = 500


def _copies(conn: Connection[Any] | AsyncConnection[Any], rows: Sequence[EnqueueRow]) -> bool:
    """Bulk-copy `rows`? Big enough, and `conn` not in pipeline mode (where COPY is not allowed)."""
    return len(rows) >= COPY_MIN_ROWS and conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


def _reserved_ids(row: tuple[Any, ...] | None, count: int) -> list[int]:
    ids = sorted(row[0]) if row is not None and row[0] is not None else []
    if len(ids) != count:
        raise DatabaseError(f"job_reserve_ids returned {len(ids)} ids for {count} jobs")
    return ids


def _missing(ids: list[int | None]) -> list[int]:
    return [index for index, job_id in enumerate(ids) if job_id is None]


def _inserted_id(inserted: tuple[Any, ...] | None) -> int:
    if inserted is None:  # INSERT ... VALUES ... RETURNING always returns its row
        raise DatabaseError("job_insert_now returned no row")
    return int(inserted[0])


# A unique insert that was skipped because a live job held the key looks that holder up; if the
# holder finished in between (the lookup finds nothing), the key is free again and the row is
# inserted again. One rule for the single and the bulk paths: this many inserts of one row in all.
UNIQUE_INSERT_ATTEMPTS = 3


def _holder_vanished(row: EnqueueRow) -> DatabaseError:
    return DatabaseError(f"unique_key {row.unique_key!r}: its holder finished before it could be looked up, "
                         f"{UNIQUE_INSERT_ATTEMPTS} times in a row; enqueue again")


class Store(OpsStoreMixin):
    """Named queries for one schema. Sync methods take a Connection, `a`-prefixed ones an AsyncConnection."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.q: dict[str, LiteralString] = queries_for(schema)

    def errors(self) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self.schema)

    # -- enqueue -------------------------------------------------------------------------------

    def job_insert(self, conn: Connection[Any], row: EnqueueRow) -> int:
        if _runs_now(row):
            with self.errors():
                inserted = conn.execute(self.q["job_insert_now"], _insert_now_params(row)).fetchone()
            return _inserted_id(inserted)
        with self.errors():
            return self._insert_unique(conn, row, skipped=False)

    def _insert_unique(self, conn: Connection[Any], row: EnqueueRow, *, skipped: bool) -> int:
        """The id of the job inserted for `row`, or of the live job holding its unique_key.

        `skipped`: an insert of `row` was already skipped as a duplicate (by job_insert_many), so
        start with the holder lookup. See UNIQUE_INSERT_ATTEMPTS.
        """
        for attempt in range(UNIQUE_INSERT_ATTEMPTS):
            found: tuple[Any, ...] | None = None
            if attempt > 0 or not skipped:
                found = conn.execute(self.q["job_insert"], _insert_params(row)).fetchone()
            if found is None:  # a live job already holds this unique_key: return that one
                found = conn.execute(self.q["job_get_id_by_unique_key"], {"unique_key": row.unique_key}).fetchone()
            if found is not None:
                return int(found[0])
        raise _holder_vanished(row)

    async def ajob_insert(self, conn: AsyncConnection[Any], row: EnqueueRow) -> int:
        if _runs_now(row):
            with self.errors():
                cur = await conn.execute(self.q["job_insert_now"], _insert_now_params(row))
                inserted = await cur.fetchone()
            return _inserted_id(inserted)
        with self.errors():
            return await self._ainsert_unique(conn, row, skipped=False)

    async def _ainsert_unique(self, conn: AsyncConnection[Any], row: EnqueueRow, *, skipped: bool) -> int:
        """Async twin of _insert_unique()."""
        for attempt in range(UNIQUE_INSERT_ATTEMPTS):
            found: tuple[Any, ...] | None = None
            if attempt > 0 or not skipped:
                found = await (await conn.execute(self.q["job_insert"], _insert_params(row))).fetchone()
            if found is None:
                cur = await conn.execute(self.q["job_get_id_by_unique_key"], {"unique_key": row.unique_key})
                found = await cur.fetchone()
            if found is not None:
                return int(found[0])
        raise _holder_vanished(row)

    def job_insert_many(self, conn: Connection[Any], rows: Sequence[EnqueueRow]) -> list[int]:
        if all(_runs_now(row) for row in rows):
            if _copies(conn, rows):
                return self.job_copy_now(conn, rows)
            with self.errors():
                return [int(r[0]) for r in conn.execute(self.q["job_insert_many_now"], _insert_many_now_params(rows))]
        with self.errors():
            returned = conn.execute(self.q["job_insert_many"], _insert_many_params(rows)).fetchall()
            ids = _ids_in_input_order(rows, returned)
            for index in _missing(ids):  # skipped as duplicates: the holder, or a fresh insert if it finished
                ids[index] = self._insert_unique(conn, rows[index], skipped=True)
        return [int(i) for i in ids if i is not None]

    async def ajob_insert_many(self, conn: AsyncConnection[Any], rows: Sequence[EnqueueRow]) -> list[int]:
        if all(_runs_now(row) for row in rows):
            if _copies(conn, rows):
                return await self.ajob_copy_now(conn, rows)
            with self.errors():
                cur = await conn.execute(self.q["job_insert_many_now"], _insert_many_now_params(rows))
                return [int(r[0]) for r in await cur.fetchall()]
        with self.errors():
            cur = await conn.execute(self.q["job_insert_many"], _insert_many_params(rows))
            ids = _ids_in_input_order(rows, await cur.fetchall())
            for index in _missing(ids):  # as in job_insert_many()
                ids[index] = await self._ainsert_unique(conn, rows[index], skipped=True)
        return [int(i) for i in ids if i is not None]

    def job_copy_now(self, conn: Connection[Any], rows: Sequence[EnqueueRow]) -> list[int]:
        """Insert run-now rows by COPY on `conn` (its transaction, if any); ids in input order."""
        with self.errors():  # no BEGIN/COMMIT of its own: a statement-mode pooler forbids them
            ids = _reserved_ids(conn.execute(self.q["job_reserve_ids"], {"n": len(rows)}).fetchone(), len(rows))
            with conn.cursor().copy(self.q["job_copy_now"]) as copy:
                for job_id, r in zip(ids, rows, strict=True):
                    copy.write_row((job_id, r.task, r.queue, r.args, r.priority, r.max_attempts))
        return ids

    async def ajob_copy_now(self, conn: AsyncConnection[Any], rows: Sequence[EnqueueRow]) -> list[int]:
        with self.errors():
            cur = await conn.execute(self.q["job_reserve_ids"], {"n": len(rows)})
            ids = _reserved_ids(await cur.fetchone(), len(rows))
            async with conn.cursor().copy(self.q["job_copy_now"]) as copy:
                for job_id, r in zip(ids, rows, strict=True):
                    await copy.write_row((job_id, r.task, r.queue, r.args, r.priority, r.max_attempts))
        return ids

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

    # -- leadership, periodic fires, heartbeats, rescuer, cleaner (issue 3) ---------------------

    async def aleader_attempt_elect(self, conn: AsyncConnection[Any], *, leader_id: str, ttl: float,
                                    now: datetime | None = None) -> LeaderLease | None:
        """Take the lease if it is free or expired; None while another process holds it."""
        params = {"leader_id": leader_id, "ttl": ttl, "now": now}
        with self.errors():
            row = await (await conn.execute(self.q["leader_attempt_elect"], params)).fetchone()
        return None if row is None else LeaderLease(*row)

    async def aleader_attempt_reelect(self, conn: AsyncConnection[Any], *, leader_id: str, term: int, ttl: float,
                                      now: datetime | None = None) -> LeaderLease | None:
        """Renew our lease of `term`; None once another process has been elected."""
        params = {"leader_id": leader_id, "term": term, "ttl": ttl, "now": now}
        with self.errors():
            row = await (await conn.execute(self.q["leader_attempt_reelect"], params)).fetchone()
        return None if row is None else LeaderLease(*row)

    async def aleader_resign(self, conn: AsyncConnection[Any], *, leader_id: str, term: int, channel: str,
                             now: datetime | None = None) -> bool:
        """Expire our lease of `term` now and notify `channel`; False if it was no longer ours."""
        params = {"leader_id": leader_id, "term": term, "channel": channel, "now": now}
        with self.errors():
            row = await (await conn.execute(self.q["leader_resign"], params)).fetchone()
        return row is not None

    def leader_get(self, conn: Connection[Any], now: datetime | None = None) -> LeaderLease | None:
        with self.errors():
            row = conn.execute(self.q["leader_get"], {"now": now}).fetchone()
        return None if row is None else LeaderLease(*row)

    async def aleader_get(self, conn: AsyncConnection[Any], now: datetime | None = None) -> LeaderLease | None:
        with self.errors():
            row = await (await conn.execute(self.q["leader_get"], {"now": now})).fetchone()
        return None if row is None else LeaderLease(*row)

    async def aperiodic_fire(self, conn: AsyncConnection[Any], *, schedule: str, fire_time: datetime,
                             row: EnqueueRow | None, missed: int = 0, leader_term: int | None = None,
                             now: datetime | None = None, overlap: bool = True) -> FireResult:
        """Record one tick and, when `row` is given, enqueue its job in the same transaction.

        With overlap=False and the job of the previous enqueued tick unfinished, the tick is
        recorded as skipped instead and nothing is enqueued.
        """
        params = {"schedule": schedule, "fire_time": fire_time, "outcome": "skipped" if row is None else "enqueued",
                  "missed": missed, "leader_term": leader_term, "now": now}
        with self.errors():
            async with conn.transaction():
                await conn.execute(self.q["periodic_fire_timeouts_set"], {"idle_ms": "5000", "lock_ms": "5000"})
                claimed = await (await conn.execute(self.q["periodic_fire_record"], params)).fetchone()
                if claimed is None:
                    return FireResult(recorded=False)
                if row is None:
                    return FireResult(recorded=True)
                if not overlap:
                    unfinished = await (await conn.execute(self.q["periodic_unfinished_run"], params)).fetchone()
                    if unfinished is not None:
                        await conn.execute(self.q["periodic_fire_set_skipped"], params)
                        return FireResult(recorded=True, unfinished_job_id=int(unfinished[0]))
                job_id = await self.ajob_insert(conn, row)
                await conn.execute(self.q["periodic_fire_set_job"],
                                   {"schedule": schedule, "fire_time": fire_time, "job_id": job_id})
        return FireResult(recorded=True, job_id=job_id)

    async def aperiodic_register(self, conn: AsyncConnection[Any], *, schedule: str, fire_time: datetime,
                                 leader_term: int | None = None) -> bool:
        """Record the moment a schedule was first seen: ticks after it are due, none before."""
        params = {"schedule": schedule, "fire_time": fire_time, "outcome": "registered", "missed": 0,
                  "leader_term": leader_term, "now": None}
        with self.errors():
            row = await (await conn.execute(self.q["periodic_fire_record"], params)).fetchone()
        return row is not None

    async def aperiodic_last_fires(self, conn: AsyncConnection[Any], names: Sequence[str]) -> dict[str, LastFire]:
        with self.errors():
            rows = await (await conn.execute(self.q["periodic_last_fires"], {"names": list(names)})).fetchall()
        return {row[0]: LastFire(*row) for row in rows}

    def periodic_last_fires(self, conn: Connection[Any], names: Sequence[str]) -> dict[str, LastFire]:
        with self.errors():
            rows = conn.execute(self.q["periodic_last_fires"], {"names": list(names)}).fetchall()
        return {row[0]: LastFire(*row) for row in rows}

    def periodic_schedule_names(self, conn: Connection[Any]) -> list[str]:
        with self.errors():
            return [str(row[0]) for row in conn.execute(self.q["periodic_schedule_names"]).fetchall()]

    async def aworker_heartbeat(self, conn: AsyncConnection[Any], *, worker_id: str, hostname: str, pid: int,
                                queues: Sequence[str], concurrency: int, running: Sequence[int],
                                now: datetime | None = None) -> None:
        params = {"worker_id": worker_id, "hostname": hostname, "pid": pid, "queues": list(queues),
                  "concurrency": concurrency, "running": list(running), "now": now}
        with self.errors():
            await conn.execute(self.q["worker_heartbeat"], params)

    async def aworker_delete(self, conn: AsyncConnection[Any], worker_id: str) -> None:
        with self.errors():
            await conn.execute(self.q["worker_delete"], {"worker_id": worker_id})

    def worker_list(self, conn: Connection[Any], now: datetime | None = None) -> list[WorkerInfo]:
        with self.errors():
            rows = conn.execute(self.q["worker_list"], {"now": now}).fetchall()
        return [WorkerInfo(*row) for row in rows]

    async def ajob_rescue_stuck(self, conn: AsyncConnection[Any], *, rescue_after: float, limit: int,
                                now: datetime | None = None) -> list[RescuedJob]:
        params = {"rescue_after": rescue_after, "limit": limit, "now": now}
        with self.errors():
            rows = await (await conn.execute(self.q["job_rescue_stuck"], params)).fetchall()
        return [RescuedJob(*row[:5]) for row in rows]

    async def ajob_delete_finished(self, conn: AsyncConnection[Any], *, state: str, retention: float, limit: int,
                                   now: datetime | None = None) -> int:
        """Delete one batch of `state` jobs finalized more than `retention` seconds ago; returns the count."""
        params = {"state": state, "retention": retention, "limit": limit, "now": now}
        with self.errors():
            return (await conn.execute(self.q["job_delete_finished"], params)).rowcount

    async def aperiodic_fire_prune(self, conn: AsyncConnection[Any], *, retention: float, limit: int,
                                   now: datetime | None = None) -> int:
        params = {"retention": retention, "limit": limit, "now": now}
        with self.errors():
            return (await conn.execute(self.q["periodic_fire_prune"], params)).rowcount

    async def aworker_prune_dead(self, conn: AsyncConnection[Any], *, retention: float, limit: int,
                                 now: datetime | None = None) -> int:
        params = {"retention": retention, "limit": limit, "now": now}
        with self.errors():
            return (await conn.execute(self.q["worker_prune_dead"], params)).rowcount

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

    # -- benchmarks (pgtasks.bench; issue 5) -----------------------------------------------------

    def bench_drain_window(self, conn: Connection[Any], task: str) -> dict[str, Any]:
        """completed, total, first_claim, last_outcome, fetches, outcome_writes of one task's jobs."""
        with self.errors():
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            row = cur.execute(self.q["bench_drain_window"], {"task": task}).fetchone()
        assert row is not None  # an aggregate always returns one row
        return row

    def bench_start_latencies(self, conn: Connection[Any], task: str) -> list[float]:
        """Enqueue-to-claim latency (ms) of each completed job of `task`, in id order."""
        with self.errors():
            return [float(r[0]) for r in conn.execute(self.q["bench_start_latencies"], {"task": task})]

    def bench_backend_pids(self, conn: Connection[Any], application_name: str) -> list[int]:
        with self.errors():
            return [int(r[0]) for r in conn.execute(self.q["bench_backend_pids"],
                                                    {"application_name": application_name})]

    def bench_count_completed(self, conn: Connection[Any], task: str) -> int:
        with self.errors():
            row = conn.execute(self.q["bench_count_completed"], {"task": task}).fetchone()
        return int(row[0]) if row else 0

    def bench_schema_drop(self, conn: Connection[Any]) -> None:
        """Drop this store's schema; only pgtasks.bench.drop_schema() calls it, for its throwaway schemas."""
        with self.errors():
            conn.execute(self.q["bench_schema_drop"])
