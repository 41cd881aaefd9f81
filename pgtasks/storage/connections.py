"""Pooler-safe connection settings, DSN checks and connection-pool construction."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import re
import select
import time
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import AsyncConnection, Connection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from pgtasks.core.errors import (
    ConfigurationError,
    ConnectionLostError,
    DatabaseUnreachableError,
    StatementPoolingError,
)
from pgtasks.core.logs import log_event
from pgtasks.storage.prepared import Preparing

logger = logging.getLogger("pgtasks.connections")

# Seconds a pool closed at event-loop shutdown waits for connections to come back.
POOL_CLOSE_TIMEOUT = 5.0

# Seconds a new connection may take unless the DSN (or PGCONNECT_TIMEOUT) says otherwise. libpq's
# own default is to wait forever, which for a dropped packet means the OS's TCP timeout (minutes):
# a wrong host would hang every command instead of failing with a message.
DEFAULT_CONNECT_TIMEOUT = 5
# Between a worker's attempts to reach the database at start (--wait-for-database): first, cap.
WAIT_RETRY_FIRST, WAIT_RETRY_CAP = 1.0, 10.0


def connection_kwargs(application_name: str) -> dict[str, Any]:
    """Keyword arguments for every pgtasks connection.

    - autocommit: pgtasks opens short explicit transactions itself; psycopg's implicit transaction
      would hold a server connection (and, behind PgBouncer, a pooled backend) until commit.
    - prepare_threshold=None: server-side prepared statements break under transaction pooling
      ("prepared statement _pg3_0 already exists"), and a pooler may be in any path. A Preparing
      turns them on afterwards where the connection proves direct (see pgtasks.storage.prepared).
    - application_name is the only startup parameter sent; PgBouncer rejects `options`.
    """
    return {"autocommit": True, "prepare_threshold": None, "application_name": application_name}


def check_dsn(dsn: str, *, name: str = "database_url") -> str:
    """Reject DSNs that carry startup `options`, which PgBouncer refuses and poolers drop."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"{name}={redact(dsn)!r} is not a valid PostgreSQL DSN: {exc}") from None
    if params.get("options"):
        raise ConfigurationError(
            f"{name} sets options={params['options']!r}: PgBouncer refuses startup options "
            "('unsupported startup parameter: options') and other poolers drop them silently. "
            "Remove `options` from the DSN: pgtasks sets its timeouts per transaction, and server "
            "defaults belong in ALTER ROLE ... SET or postgresql.conf."
        )
    return dsn


def redact(dsn: str) -> str:
    """The DSN with any password replaced, for logs and error messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - the redaction mask, not a password
    return " ".join(f"{k}={v}" for k, v in params.items())


def with_connect_timeout(dsn: str, seconds: int | None = None) -> str:
    """The DSN with a connect timeout: `seconds` if given, else the DSN's own connect_timeout (or
    $PGCONNECT_TIMEOUT), else DEFAULT_CONNECT_TIMEOUT. 0 means wait forever, as in libpq."""
    if seconds is None and (conninfo_to_dict(dsn).get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT")):
        return dsn
    return make_conninfo(dsn, connect_timeout=DEFAULT_CONNECT_TIMEOUT if seconds is None else seconds)


def describe_target(dsn: str) -> str:
    """Where a DSN points, for error messages: host, port, database and user, never the password.

    Settings the DSN leaves out are shown as libpq resolves them ($PGHOST ... or its defaults), so
    the message says where the connection really went."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    user = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "(local Unix socket)"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user
    return f"host={host} port={port} dbname={dbname} user={user}"


# psycopg's "connection failed: connection to server at "h", port p failed: " says again what
# describe_target() says; the reason after it is the part worth reading.
_CONNECT_PREFIX = re.compile(r'^(connection failed: )?(connection to server (at|on) .*? failed: )?')


def unreachable(dsn: str, exc: BaseException) -> DatabaseUnreachableError:
    """The one-line error for a connection that could not be opened: where, why, and what to check."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    # libpq's hint (indented on the next line) in brackets: "Connection refused (Is the server running ...?)"
    reason = _CONNECT_PREFIX.sub("", lines[0]).replace("FATAL:  ", "").rstrip(".")
    if lines[1:]:
        reason += f" ({' '.join(lines[1:])})"
    timeout = conninfo_to_dict(dsn).get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT")
    if isinstance(exc, psycopg.errors.ConnectionTimeout) or "timeout expired" in reason:
        reason = (f"no answer within connect_timeout={timeout}s; check the host and port and any firewall "
                  "between, or allow longer (connect_timeout in the DSN, or `pgtasks --connect-timeout`)")
    return DatabaseUnreachableError(
        f"cannot connect to PostgreSQL at {describe_target(dsn)}: {reason}. Check the database URL "
        "(--database-url, PGTASKS_DATABASE_URL or App(database_url=...)) and that the server is up")


def connect(dsn: str, application_name: str, preparing: Preparing | None = None) -> Connection[Any]:
    """A new pooler-safe connection; DatabaseUnreachableError, naming the target, if none can be opened.

    With `preparing`, it decides whether the connection prepares statements (one round trip)."""
    try:
        conn = psycopg.connect(dsn, **connection_kwargs(application_name))
    except psycopg.OperationalError as exc:
        raise unreachable(dsn, exc) from exc
    if preparing is not None:
        try:
            preparing.configure(conn)
        except BaseException:
            conn.close()
            raise
    return conn


async def aconnect(dsn: str, application_name: str, preparing: Preparing | None = None) -> AsyncConnection[Any]:
    """The asyncio twin of connect()."""
    try:
        conn = await AsyncConnection.connect(dsn, **connection_kwargs(application_name))
    except psycopg.OperationalError as exc:
        raise unreachable(dsn, exc) from exc
    if preparing is not None:
        try:
            await preparing.aconfigure(conn)
        except BaseException:
            await conn.close()
            raise
    return conn


async def await_database(dsn: str, *, application_name: str, wait: float) -> None:
    """Return once one connection opens; retry for up to `wait` seconds, logging each failed try
    with the seconds until the next one and until giving up; then raise DatabaseUnreachableError.

    A worker calls it before it opens its pool: with wait=0 an unreachable database is one line and
    a quick exit, not the pool's reconnect log lines and a PoolTimeout half a minute later."""
    deadline = time.monotonic() + wait
    pause = WAIT_RETRY_FIRST
    while True:
        try:
            conn = await aconnect(dsn, application_name)
        except DatabaseUnreachableError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            pause = min(pause, left)
            log_event(logger, logging.WARNING, "database.unreachable", retry_in_s=round(pause, 1),
                      gives_up_in_s=round(left, 1), error=str(exc))
            await asyncio.sleep(pause)
            pause = min(pause * 2, WAIT_RETRY_CAP)
            continue
        await conn.close()
        return


def went_stale(conn: Connection[Any] | AsyncConnection[Any]) -> bool:
    """True if an idle connection was closed or broken by the other side since its last use.

    Costs no round trip: an idle connection has nothing to read unless the server or the pooler
    spoke first. That is EOF when PgBouncer or PostgreSQL restarted, or a FATAL before EOF after
    pg_terminate_backend(); reading it shows whether the connection is still usable. A socket
    that died silently (a half-open TCP connection) is not caught here; its first statement fails.
    """
    if conn.closed or conn.broken:
        return True
    pgconn = conn.pgconn
    if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
        return True
    try:
        # A server that terminates a session sends a FATAL and then closes: libpq takes the FATAL
        # as a notice and stays OK until it reads the EOF behind it. So read until nothing is left
        # (a few reads at most; a healthy idle connection is not readable at all).
        for _ in range(4):
            if not _readable(pgconn.socket):
                break
            pgconn.consume_input()
            if pgconn.status != ConnStatus.OK:
                return True
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return pgconn.status != ConnStatus.OK


def _readable(fd: int) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))  # POLLHUP and POLLERR are reported even when not asked for
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


def _no_connection(pool: str, conninfo: str, exc: PoolTimeout) -> ConnectionLostError:
    return ConnectionLostError(f"no database connection from pool {pool!r} ({describe_target(conninfo)}): {exc}")


class CheckedConnectionPool(ConnectionPool):
    """A ConnectionPool that never hands out a connection the other side already closed.

    After a PgBouncer or PostgreSQL restart every idle pooled connection is dead. psycopg_pool
    would hand them out one by one, and each caller's first statement would fail. Here stale
    ones are dropped at checkout (see went_stale) and the next one is taken, without the
    pool's own check backoff. The wait for a connection ending (PoolTimeout) becomes a
    ConnectionLostError, like every other lost-connection error pgtasks raises.

    With `preparing`, a connection's first checkout also decides whether it prepares statements
    (Preparing.configure). At checkout, not in the pool's `configure` callback: the check is a
    statement, which behind an exhausted pooler waits for a server like the caller's own
    statement would, and fails the same way (PoolExhaustedError, retried by the caller), where
    in `configure` it would stall the pool's connecting and time out pool.open().
    """

    def __init__(self, *args: Any, preparing: Preparing | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._preparing = preparing
        self._decided: weakref.WeakSet[Connection[Any]] = weakref.WeakSet()

    def getconn(self, timeout: float | None = None) -> Connection[Any]:
        for _ in range(self.max_size + 1):
            try:
                conn = super().getconn(timeout)
            except PoolTimeout as exc:
                raise _no_connection(self.name, str(self.conninfo), exc) from exc
            if not went_stale(conn):
                if self._preparing is not None and conn not in self._decided:
                    try:
                        self._preparing.configure(conn)
                    except BaseException:
                        self.putconn(conn)  # undecided still (or broken, and then replaced)
                        raise
                    self._decided.add(conn)
                return conn
            log_event(logger, logging.INFO, "connection.stale_dropped", pool=self.name)
            conn.close()
            self.putconn(conn)  # a closed connection is discarded and replaced by the pool
        raise ConnectionLostError(f"pool {self.name!r}: every connection handed out was already closed")


class CheckedAsyncConnectionPool(AsyncConnectionPool):
    """The asyncio twin of CheckedConnectionPool."""

    def __init__(self, *args: Any, preparing: Preparing | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._preparing = preparing
        self._decided: weakref.WeakSet[AsyncConnection[Any]] = weakref.WeakSet()

    async def getconn(self, timeout: float | None = None) -> AsyncConnection[Any]:
        for _ in range(self.max_size + 1):
            try:
                conn = await super().getconn(timeout)
            except PoolTimeout as exc:
                raise _no_connection(self.name, str(self.conninfo), exc) from exc
            if not went_stale(conn):
                if self._preparing is not None and conn not in self._decided:
                    try:
                        await self._preparing.aconfigure(conn)
                    except BaseException:
                        await self.putconn(conn)
                        raise
                    self._decided.add(conn)
                return conn
            log_event(logger, logging.INFO, "connection.stale_dropped", pool=self.name)
            await conn.close()
            await self.putconn(conn)
        raise ConnectionLostError(f"pool {self.name!r}: every connection handed out was already closed")


def refused_transaction_block(exc: BaseException) -> bool:
    """PgBouncer in statement mode refusing BEGIN: "transaction blocks not allowed in statement pooling mode"."""
    return "statement pooling" in str(exc)


@contextlib.contextmanager
def refusing_statement_pooling() -> Iterator[None]:
    """Turn a statement-mode pooler's refusal of a transaction block into an error that says what to do."""
    try:
        yield
    except psycopg.Error as exc:
        if not refused_transaction_block(exc):
            raise
        raise StatementPoolingError(
            f"the connection pooler runs in statement pooling mode and refused a transaction block ({exc}). "
            "app.transaction() and every enqueue inside your own transaction need a session or transaction "
            "pool, or a direct connection: point database_url there (PgBouncer: pool_mode = transaction). "
            "Standalone .delay() and delay_many() work in statement mode."
        ) from exc


def close_with_loop(pool: AsyncConnectionPool[Any]) -> asyncio.Task[None]:
    """Close `pool` when its event loop shuts down, if nobody closed it before.

    psycopg_pool's background tasks catch CancelledError on purpose (so that a maintenance task
    never dies), so when asyncio.run() ends and cancels every task, a pool that is reconnecting
    (after a broken connection) keeps its tasks alive and asyncio.run() never returns. This guard
    task is cancelled along with them and closes the pool, which stops its tasks. Keep a
    reference to the returned task; cancelling it closes the pool too.
    """

    async def close_when_cancelled() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # never resolves: wait to be cancelled
        finally:
            await pool.close(timeout=POOL_CLOSE_TIMEOUT)

    return asyncio.get_running_loop().create_task(close_when_cancelled(), name=f"{pool.name}-closer")


def make_pool(dsn: str, *, application_name: str, max_size: int, name: str,
              preparing: Preparing | None = None) -> ConnectionPool:
    """A sync pool (closed; call .open()) whose connections follow connection_kwargs(); with
    `preparing`, each connection decides at its first checkout whether it prepares statements."""
    return CheckedConnectionPool(
        dsn,
        kwargs=connection_kwargs(application_name),
        preparing=preparing,
        min_size=0,
        max_size=max_size,
        open=False,
        name=name,
        # A connection found broken is replaced by the pool; idle ones are recycled so a
        # restarted pooler or server is noticed without a check on every checkout.
        max_idle=60.0,
        reconnect_timeout=60.0,
    )


def make_async_pool(dsn: str, *, application_name: str, max_size: int, name: str,
                    preparing: Preparing | None = None) -> AsyncConnectionPool:
    """The asyncio twin of make_pool()."""
    return CheckedAsyncConnectionPool(
        dsn,
        kwargs=connection_kwargs(application_name),
        preparing=preparing,
        min_size=min(1, max_size),
        max_size=max_size,
        open=False,
        name=name,
        max_idle=60.0,
        reconnect_timeout=60.0,
    )
