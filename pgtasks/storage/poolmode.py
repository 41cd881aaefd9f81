"""Tells from the client side whether a DSN reaches PostgreSQL directly or via a session or transaction pooler."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import AsyncConnection

from pgtasks.core.errors import DatabaseError
from pgtasks.storage.connections import connection_kwargs, refused_transaction_block
from pgtasks.storage.store import Store

# Seconds the whole detection may take. It needs two server connections at once, so behind an
# exhausted pool it would wait for PgBouncer's query_wait_timeout (2 minutes by default).
DEFAULT_TIMEOUT = 5.0
# Seconds a NOTIFY may take to come back on the LISTEN connection (it takes milliseconds).
DEFAULT_LISTEN_TIMEOUT = 1.0


class PoolMode(StrEnum):
    """What sits between pgtasks and PostgreSQL, as far as a client can tell."""

    DIRECT = "direct"            # PostgreSQL itself: a connection keeps its backend
    SESSION = "session"          # a pooler that keeps one backend per client connection
    TRANSACTION = "transaction"  # a pooler that may hand each transaction another backend
    STATEMENT = "statement"      # a pooler that refuses transaction blocks (PgBouncer statement mode)
    UNKNOWN = "unknown"          # detection timed out or could not connect


@dataclass(frozen=True, slots=True)
class Detection:
    """The result of detect_pool_mode().

    `pooler` is True when the connection's cancel key (BackendKeyData) names another process than
    pg_backend_pid(), which PgBouncer does because it forges the key; None if not measured.
    `listen_ok` is True when a NOTIFY from a second connection reached a LISTEN on the first:
    the only proof that LISTEN/NOTIFY works. None when it was not tried (transaction pooling,
    where a LISTEN would be left behind on a pooled backend, or check_listen=False).
    """

    mode: PoolMode
    pooler: bool | None
    listen_ok: bool | None
    detail: str
    elapsed_ms: float


async def adetect_pool_mode(
    dsn: str,
    store: Store,
    *,
    application_name: str = "pgtasks",
    timeout: float = DEFAULT_TIMEOUT,
    listen_timeout: float = DEFAULT_LISTEN_TIMEOUT,
    check_listen: bool = True,
    tries: int = 3,
) -> Detection:
    """Detect direct / session / transaction pooling on `dsn` with two short-lived connections.

    Transaction pooling: connection A reads its backend pid (p1), connection B opens a
    transaction and reads its pid (pb), A reads its pid again (p2). A direct or session-pooled
    connection keeps its backend, so p1 == p2 and pb differs; under transaction pooling A moves
    to another backend or B is handed A's backend. Repeated `tries` times since an idle pool can
    hand A the same backend by chance. Neither `SHOW pool_mode` nor server_version tells the mode
    (PgBouncer answers them with PostgreSQL's values).

    Never raises for the database's sake: a timeout or a failed connection gives mode UNKNOWN
    with listen_ok False ("no LISTEN"), and `detail` says what happened.
    """
    started = time.monotonic()
    state: dict[str, Any] = {}
    conns: list[AsyncConnection[Any]] = []
    task = asyncio.ensure_future(_detect(dsn, store, application_name, listen_timeout, check_listen, tries,
                                         state, conns))
    try:
        await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    timed_out = not task.done()
    if timed_out:
        # Cancelling would not help: PgBouncer ignores cancel requests of a client queued for a
        # server, and psycopg would wait 5 s for the query to end. Shut the sockets instead.
        for conn in conns:
            _abandon(conn)
        await asyncio.wait({task}, timeout=1.0)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    try:
        mode, detail = task.result()
    except (DatabaseError, psycopg.Error, OSError, asyncio.CancelledError) as exc:
        mode = PoolMode.UNKNOWN
        state["listen_ok"] = False
        if refused_transaction_block(exc):
            mode = PoolMode.STATEMENT
            detail = f"the pooler refused a transaction block: {exc}"
        elif timed_out:
            detail = (f"no answer within {timeout:g}s (the pool may be exhausted: detection needs two "
                      "server connections at once)")
        else:
            detail = f"detection failed: {exc}"
    return Detection(mode, state.get("pooler"), state.get("listen_ok"), detail,
                     round((time.monotonic() - started) * 1000, 1))


def detect_pool_mode(dsn: str, store: Store, **options: Any) -> Detection:
    """Blocking twin of adetect_pool_mode() for code without an event loop."""
    return asyncio.run(adetect_pool_mode(dsn, store, **options))


async def _connect(dsn: str, application_name: str, conns: list[AsyncConnection[Any]]) -> AsyncConnection[Any]:
    try:
        conn = await AsyncConnection.connect(dsn, **connection_kwargs(application_name))
    except Exception as exc:  # psycopg.OperationalError and friends: report, never raise past here
        raise DatabaseError(f"cannot connect: {exc}") from exc
    conns.append(conn)
    return conn


def _abandon(conn: AsyncConnection[Any]) -> None:
    """Shut down a connection's socket under psycopg, so a query waiting on it ends at once with an error."""
    try:
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (OSError, psycopg.Error):
        return  # already closed: nothing is waiting on it
    with dup, contextlib.suppress(OSError):  # OSError: already shut down by the other side
        dup.shutdown(socket.SHUT_RDWR)


async def _detect(
    dsn: str, store: Store, application_name: str, listen_timeout: float, check_listen: bool, tries: int,
    state: dict[str, Any], conns: list[AsyncConnection[Any]],
) -> tuple[PoolMode, str]:
    name = application_name + "-probe"
    async with await _connect(dsn, name, conns) as a, await _connect(dsn, name, conns) as b:
        real = await store.abackend_pid(a)
        state["pooler"] = pooler = a.info.backend_pid != real
        for attempt in range(1, tries + 1):
            p1 = await store.abackend_pid(a)
            async with b.transaction():
                pb = await store.abackend_pid(b)
                p2 = await store.abackend_pid(a)
            if p1 != p2 or pb in (p1, p2):
                return PoolMode.TRANSACTION, (
                    f"backend pid changed between transactions (try {attempt}: A ran on {p1} then {p2} "
                    f"while B held {pb}): transaction pooling")
        mode = PoolMode.SESSION if pooler else PoolMode.DIRECT
        detail = ("cancel key differs from pg_backend_pid(): a pooler keeping one backend per connection"
                  if pooler else "cancel key equals pg_backend_pid(): PostgreSQL itself")
        if not check_listen:
            return mode, detail
        channel = f"pgtasks.probe.{uuid.uuid4().hex[:16]}"
        await store.achannel_listen(a, channel)
        await store.achannel_notify(b, channel, "probe")
        listen_ok = False
        async with contextlib.aclosing(a.notifies(timeout=listen_timeout)) as notifies:
            async for notify in notifies:
                if notify.channel == channel:
                    listen_ok = True
                    break
        state["listen_ok"] = listen_ok
        await store.achannel_unlisten(a, channel)
        if not listen_ok:
            detail += f"; but a NOTIFY did not reach the LISTEN within {listen_timeout:g}s"
        return mode, detail
