"""Queries of jobs.sql: enqueue (single, bulk, COPY), the worker's claim and outcome writes, reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, LiteralString

import msgspec
import psycopg
from psycopg import AsyncConnection, Connection

from pgtasks.core.errors import DatabaseError
from pgtasks.core.models import ClaimedJob, EnqueueRow, Outcome
from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import CopyIn, Operation, count_affected, every, one, select_dict

Queries = Mapping[str, LiteralString]
_ENCODER = msgspec.json.Encoder()

# From this many rows on, a bulk insert of run-now rows streams them by COPY; below it the
# one-statement JSON insert is as fast or faster (COPY costs one more round trip; measured
# A/B: even at 200 rows, 8% faster at 500, 20% at 2,000, 30% at 5,000).
COPY_MIN_ROWS = 500
# A unique insert that was skipped because a live job held the key looks that holder up; if the
# holder finished in between (the lookup finds nothing), the key is free again and the row is
# inserted again. One rule for the single and the bulk paths: this many inserts of one row in all.
UNIQUE_INSERT_ATTEMPTS = 3


def _runs_now(row: EnqueueRow) -> bool:
    """No unique_key, eta, countdown, expiry or trace context: the column defaults say the rest
    (job_insert_now). A traced row takes the general statement, so the untraced hot path is unchanged."""
    return (row.unique_key is None and row.run_at is None and row.delay is None and row.expires_at is None
            and row.expires_in is None and row.traceparent is None and row.limit_key is None)


def _insert_params(row: EnqueueRow) -> dict[str, Any]:
    return {
        "task": row.task, "queue": row.queue, "args": row.args, "priority": row.priority,
        "max_attempts": row.max_attempts, "run_at": row.run_at, "delay": row.delay,
        "expires_at": row.expires_at, "expires_in": row.expires_in, "unique_key": row.unique_key,
        "traceparent": row.traceparent, "limit_key": row.limit_key,
    }


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
        "unique_keys": [r.unique_key for r in rows], "traceparents": [r.traceparent for r in rows],
        "limit_keys": [r.limit_key for r in rows],
    }


def _outcome_params(outcomes: Sequence[Outcome], now: datetime | None) -> dict[str, Any]:
    """The outcome arrays. Those of numbers, states and NULLs go as array literals (`{1,2,3}`, cast
    by the statement's `::bigint[]`): psycopg dumps a list element by element in Python, which cost
    the worker ~6 us a job, and none of these values needs quoting. The JSON ones (an error, a
    result) go as lists when there is one, for psycopg to quote."""
    errors = [None if o.error is None else _ENCODER.encode(o.error).decode() for o in outcomes]
    results = [None if o.result is None else o.result.decode() for o in outcomes]
    return {
        "ids": _array_literal([o.job_id for o in outcomes]),
        "claims": _array_literal([o.claims for o in outcomes]),
        "states": _array_literal([o.state.value for o in outcomes]),  # lower-case words: no quoting needed
        "retry_ins": _array_literal(["NULL" if o.retry_in is None else repr(float(o.retry_in)) for o in outcomes]),
        "attempt_deltas": _array_literal([o.attempt_delta for o in outcomes]),
        "errors": errors if any(errors) else _array_literal(["NULL"] * len(errors)),
        "results": results if any(results) else _array_literal(["NULL"] * len(results)),
        "now": now,
    }


def _array_literal(values: Sequence[object]) -> str:
    """`{a,b,...}` of values whose text needs no quoting in an array literal (numbers, words, NULL)."""
    return "{" + ",".join(map(str, values)) + "}"


def _ids_in_input_order(rows: Sequence[EnqueueRow], returned: list[tuple[int, str | None]]) -> list[int | None]:
    """Map RETURNING rows (input order, duplicates missing) back onto the input rows."""
    by_key = {key: job_id for job_id, key in returned if key is not None}
    plain = iter(job_id for job_id, key in returned if key is None)
    return [next(plain) if row.unique_key is None else by_key.get(row.unique_key) for row in rows]


def _reserved_ids(row: tuple[Any, ...] | None, count: int) -> list[int]:
    ids = sorted(row[0]) if row is not None and row[0] is not None else []
    if len(ids) != count:
        raise DatabaseError(f"job_reserve_ids returned {len(ids)} ids for {count} jobs")
    return ids


def _copies(conn: Connection[Any] | AsyncConnection[Any], rows: Sequence[EnqueueRow]) -> bool:
    """Bulk-copy `rows`? Big enough, and `conn` not in pipeline mode (where COPY is not allowed)."""
    return len(rows) >= COPY_MIN_ROWS and conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


# -- operations (see pgtasks.storage.steps) ----------------------------------------------------------


def insert(q: Queries, row: EnqueueRow) -> Operation[int]:
    """Insert one job; with a unique_key held by a live job, that job's id instead."""
    if _runs_now(row):
        inserted = yield one(q["job_insert_now"], _insert_now_params(row))
        if inserted is None:  # INSERT ... VALUES ... RETURNING always returns its row
            raise DatabaseError("job_insert_now returned no row")
        return int(inserted[0])
    return (yield from _insert_unique(q, row, skipped=False))


def _insert_unique(q: Queries, row: EnqueueRow, *, skipped: bool) -> Operation[int]:
    """The id of the job inserted for `row`, or of the live job holding its unique_key.

    `skipped`: an insert of `row` was already skipped as a duplicate (by insert_many), so start
    with the holder lookup. The single and the bulk insert share this rule (UNIQUE_INSERT_ATTEMPTS),
    so a holder that finishes between the insert and the lookup fails neither of them.
    """
    for attempt in range(UNIQUE_INSERT_ATTEMPTS):
        found: tuple[Any, ...] | None = None
        if attempt > 0 or not skipped:
            found = yield one(q["job_insert"], _insert_params(row))
        if found is None:  # a live job already holds this unique_key: return that one
            found = yield one(q["job_get_id_by_unique_key"], {"unique_key": row.unique_key})
        if found is not None:
            return int(found[0])
    raise DatabaseError(f"unique_key {row.unique_key!r}: its holder finished before it could be looked up, "
                        f"{UNIQUE_INSERT_ATTEMPTS} times in a row; enqueue again")


def insert_many(q: Queries, rows: Sequence[EnqueueRow], *, copy: bool) -> Operation[list[int]]:
    """Insert many jobs in one round trip (COPY when `copy`); ids in input order, holders for duplicates."""
    if all(_runs_now(row) for row in rows):
        if copy:
            return (yield from copy_now(q, rows))
        inserted = yield every(q["job_insert_many_now"], _insert_many_now_params(rows))
        return [int(r[0]) for r in inserted]
    returned = yield every(q["job_insert_many"], _insert_many_params(rows))
    found = _ids_in_input_order(rows, returned)
    ids: list[int] = []
    for row, job_id in zip(rows, found, strict=True):
        ids.append(job_id if job_id is not None else (yield from _insert_unique(q, row, skipped=True)))
    return ids


def copy_now(q: Queries, rows: Sequence[EnqueueRow]) -> Operation[list[int]]:
    """Insert run-now rows by COPY (in the connection's transaction, if any); ids in input order.

    No BEGIN/COMMIT of its own: a statement-mode pooler forbids them.
    """
    ids = _reserved_ids((yield one(q["job_reserve_ids"], {"n": len(rows)})), len(rows))
    yield CopyIn(q["job_copy_now"], ((job_id, r.task, r.queue, r.args, r.priority, r.max_attempts)
                                     for job_id, r in zip(ids, rows, strict=True)))
    return ids


def fetch_available(q: Queries, *, queues: Sequence[str], limit: int, worker_id: str,
                    now: datetime | None, tasks: Sequence[str] | None = None) -> Operation[list[ClaimedJob]]:
    params = {"queues": list(queues), "limit": limit, "worker_id": worker_id, "now": now,
              "tasks": None if tasks is None else list(tasks)}
    rows = yield every(q["job_fetch_available"], params)
    return [ClaimedJob(*row) for row in rows]


def set_outcome_many(q: Queries, outcomes: Sequence[Outcome], now: datetime | None) -> Operation[set[int]]:
    rows = yield every(q["job_set_outcome_many"], _outcome_params(outcomes, now))
    return {int(row[0]) for row in rows}


def get_outcome(q: Queries, job_id: int) -> Operation[tuple[str, str | None, Any] | None]:
    row = yield one(q["job_get_outcome"], {"id": job_id})
    return None if row is None else (str(row[0]), row[1], row[2])


def get_task(q: Queries, job_id: int) -> Operation[str | None]:
    row = yield one(q["job_get_task"], {"id": job_id})
    return None if row is None else str(row[0])


def release_unknown_claims(q: Queries, worker_id: str, known_ids: Sequence[int]) -> Operation[list[int]]:
    rows = yield every(q["job_release_unknown_claims"], {"worker_id": worker_id, "known_ids": list(known_ids)})
    return [int(row[0]) for row in rows]


def set_progress_many(q: Queries, updates: Sequence[tuple[int, int, bytes]]) -> Operation[int]:
    """Store (job id, claims, progress JSON) triples; returns how many jobs took theirs."""
    params = {"ids": [u[0] for u in updates], "claims": [u[1] for u in updates],
              "progress": [u[2].decode() for u in updates]}
    return (yield from count_affected(q["job_set_progress_many"], params))


def get_progress(q: Queries, job_id: int) -> Operation[str | None]:
    """The job's progress JSON text; None when it has none or does not exist."""
    row = yield one(q["job_get_progress"], {"id": job_id})
    return None if row is None else row[0]


class JobStore(StoreBase):
    """Enqueue, claim, outcome and read methods; the sync and `a`-prefixed async faces share one operation."""

    def job_insert(self, conn: Connection[Any], row: EnqueueRow) -> int:
        return self.run(conn, insert(self.queries, row))

    async def ajob_insert(self, conn: AsyncConnection[Any], row: EnqueueRow) -> int:
        return await self.arun(conn, insert(self.queries, row))

    def job_insert_many(self, conn: Connection[Any], rows: Sequence[EnqueueRow]) -> list[int]:
        return self.run(conn, insert_many(self.queries, rows, copy=_copies(conn, rows)))

    async def ajob_insert_many(self, conn: AsyncConnection[Any], rows: Sequence[EnqueueRow]) -> list[int]:
        return await self.arun(conn, insert_many(self.queries, rows, copy=_copies(conn, rows)))

    async def ajob_fetch_available(self, conn: AsyncConnection[Any], *, queues: Sequence[str], limit: int,
                                   worker_id: str, now: datetime | None = None,
                                   tasks: Sequence[str] | None = None) -> list[ClaimedJob]:
        """Claim up to `limit` due jobs of `queues` for `worker_id` (FOR UPDATE SKIP LOCKED, one statement);
        only jobs of `tasks` when given (the tasks the worker can run)."""
        return await self.arun(conn, fetch_available(self.queries, queues=queues, limit=limit,
                                                     worker_id=worker_id, now=now, tasks=tasks))

    async def ajob_set_outcome_many(self, conn: AsyncConnection[Any], outcomes: Sequence[Outcome],
                                    now: datetime | None = None) -> set[int]:
        """Write outcomes fenced on (id, claims); returns the ids whose outcome was written."""
        return await self.arun(conn, set_outcome_many(self.queries, outcomes, now))

    async def ajob_release_unknown_claims(self, conn: AsyncConnection[Any], *, worker_id: str,
                                          known_ids: Sequence[int]) -> list[int]:
        """Put back jobs `worker_id` claimed in a fetch whose reply it never got; returns their ids."""
        return await self.arun(conn, release_unknown_claims(self.queries, worker_id, known_ids))

    def job_get(self, conn: Connection[Any], job_id: int) -> dict[str, Any] | None:
        return self.run(conn, select_dict(self.queries["job_get"], {"id": job_id}))

    async def ajob_get(self, conn: AsyncConnection[Any], job_id: int) -> dict[str, Any] | None:
        return await self.arun(conn, select_dict(self.queries["job_get"], {"id": job_id}))

    def job_get_outcome(self, conn: Connection[Any], job_id: int) -> tuple[str, str | None, Any] | None:
        """(state, result JSON, last error) of a job, or None if it does not exist."""
        return self.run(conn, get_outcome(self.queries, job_id))

    async def ajob_get_outcome(self, conn: AsyncConnection[Any], job_id: int) -> tuple[str, str | None, Any] | None:
        return await self.arun(conn, get_outcome(self.queries, job_id))

    def job_get_task(self, conn: Connection[Any], job_id: int) -> str | None:
        """The task name of a job, or None if it does not exist."""
        return self.run(conn, get_task(self.queries, job_id))

    async def ajob_get_task(self, conn: AsyncConnection[Any], job_id: int) -> str | None:
        return await self.arun(conn, get_task(self.queries, job_id))

    async def ajob_set_progress_many(self, conn: AsyncConnection[Any],
                                     updates: Sequence[tuple[int, int, bytes]]) -> int:
        """Store the latest progress of running jobs, fenced on (id, claims); how many were stored."""
        return await self.arun(conn, set_progress_many(self.queries, updates))

    def job_get_progress(self, conn: Connection[Any], job_id: int) -> str | None:
        return self.run(conn, get_progress(self.queries, job_id))

    async def ajob_get_progress(self, conn: AsyncConnection[Any], job_id: int) -> str | None:
        return await self.arun(conn, get_progress(self.queries, job_id))
