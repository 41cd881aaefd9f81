"""Where an App's connections come from: the DSN (or the embedded default), its sync pool, and a pool per event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgtasks.core.aio import cancel_and_wait
from pgtasks.core.errors import ConfigurationError
from pgtasks.core.logs import log_event
from pgtasks.storage import migrations
from pgtasks.storage.connections import (
    aconnect,
    check_dsn,
    close_with_loop,
    connect,
    make_async_pool,
    make_pool,
    with_connect_timeout,
)
from pgtasks.storage.embedded import EmbeddedLocation, locate, start_embedded
from pgtasks.storage.prepared import Preparing, resolve_prepared_statements

DATABASE_URL_ENV = "PGTASKS_DATABASE_URL"
logger = logging.getLogger("pgtasks")


class Database:
    """The connection side of one App. Nothing connects until first use.

    `dsn` resolves, in order: the database_url given, $PGTASKS_DATABASE_URL, then the embedded
    PostgreSQL (started on first use and migrated automatically: the zero-setup default; a real
    database is migrated on purpose). Pools follow connection_kwargs(): autocommit, nothing sent
    at startup but application_name; `preparing` then decides per new connection whether it
    prepares statements (`prepared_statements`: auto, on, off; see pgtasks.storage.prepared).
    """

    def __init__(self, database_url: str | None, *, schema: str, listen_dsn: str | None, pool_size: int,
                 application_name: str, embedded_dir: Path | None,
                 prepared_statements: str | bool | None = None) -> None:
        if database_url is not None:
            check_dsn(database_url)
        if listen_dsn is not None:
            check_dsn(listen_dsn, name="listen_dsn")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigurationError(f"pool_size={pool_size!r}: expected an integer >= 1")
        self.schema = schema
        self.pool_size = pool_size
        self.application_name = application_name
        self.embedded_dir = embedded_dir
        self.preparing = Preparing(resolve_prepared_statements(prepared_statements), schema)
        self._database_url = database_url
        self._listen_dsn = listen_dsn
        # Seconds a connection may take to open; None: the DSN's connect_timeout, else
        # DEFAULT_CONNECT_TIMEOUT (see with_connect_timeout). The CLI's --connect-timeout sets it.
        self.connect_timeout: int | None = None
        self._lock = threading.Lock()
        self._dsn: str | None = None
        self._is_embedded = False
        self._embedded_location: EmbeddedLocation | None = None
        self._pool: ConnectionPool | None = None
        self._async_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}
        # Per loop: the task that closes that loop's pool when the loop shuts down (see close_with_loop).
        self._async_pool_closers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    # -- the DSN ---------------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The resolved DSN (starts the embedded server on first use when needed)."""
        with self._lock:
            if self._dsn is None:
                self._dsn = self._resolve()
            return self._dsn

    @property
    def listen_dsn(self) -> str:
        """The DSN a LISTEN connection uses: listen_dsn if set, else the main DSN."""
        if self._listen_dsn:
            return with_connect_timeout(self._listen_dsn, self.connect_timeout)
        return self.dsn

    @property
    def is_embedded(self) -> bool:
        self.dsn  # noqa: B018 - resolve first
        return self._is_embedded

    @property
    def database_url_source(self) -> str | None:
        """What names the database ("database_url", "$PGTASKS_DATABASE_URL"); None: the embedded one.

        Connects nothing: `pgtasks embedded where` asks it to say whether the embedded server is in use.
        """
        if self._database_url:
            return "database_url"
        return f"${DATABASE_URL_ENV}" if os.environ.get(DATABASE_URL_ENV) else None

    def embedded_location(self) -> EmbeddedLocation:
        """Where this app's embedded server lives: the one it started, else the one found from here now."""
        if self._embedded_location is not None:
            return self._embedded_location
        return locate(self.embedded_dir, chosen_by="App(embedded_dir=...)")

    def use_database_url(self, database_url: str) -> None:
        """Point at another database (the CLI's --database-url); only before first use."""
        check_dsn(database_url)
        with self._lock:
            if self._dsn is not None and self._dsn != with_connect_timeout(database_url, self.connect_timeout):
                raise ConfigurationError("use_database_url(): the app is already connected; call it before first use")
            self._database_url = database_url
            self._dsn = None

    def _resolve(self) -> str:
        if self._database_url:
            return with_connect_timeout(self._database_url, self.connect_timeout)
        env = os.environ.get(DATABASE_URL_ENV)
        if env:
            return with_connect_timeout(check_dsn(env, name=DATABASE_URL_ENV), self.connect_timeout)
        location = self.embedded_location()
        dsn = start_embedded(location)
        # Kept: a later embedded_location() names the server this app uses, even if the process
        # has changed folder since.
        self._embedded_location = location
        self._is_embedded = True
        with connect(dsn, self.application_name) as conn:
            applied = migrations.migrate(conn, self.schema)
        if applied:
            log_event(logger, logging.INFO, "migrate.applied", versions=[m.version for m in applied])
        return dsn

    # -- connections -------------------------------------------------------------------------------

    def connect(self) -> Connection[Any]:
        """A new pooler-safe connection (autocommit; prepared statements as `preparing` decides); the
        caller closes it.

        DatabaseUnreachableError, naming host, port, database and user, when none can be opened."""
        return connect(self.dsn, self.application_name, self.preparing)

    async def aconnect(self) -> AsyncConnection[Any]:
        dsn = await asyncio.to_thread(lambda: self.dsn)
        return await aconnect(dsn, self.application_name, self.preparing)

    def pool(self) -> ConnectionPool:
        """The sync pool, opened on first use."""
        with self._lock:
            pool = self._pool
        if pool is None:
            dsn = self.dsn
            # One connection opened and closed before the pool exists: an unreachable database is
            # a DatabaseUnreachableError now, not a PoolTimeout after the pool's 30 s wait.
            connect(dsn, self.application_name).close()
            with self._lock:
                if self._pool is None:
                    self._pool = make_pool(dsn, application_name=self.application_name,
                                           max_size=self.pool_size, name="pgtasks-enqueue",
                                           preparing=self.preparing)
                    self._pool.open()
                pool = self._pool
        return pool

    async def apool(self) -> AsyncConnectionPool:
        """The running event loop's pool, opened on first use (an asyncio pool belongs to one loop)."""
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
            await (await aconnect(dsn, self.application_name)).close()  # as in pool(): fail fast, by name
            pool = make_async_pool(dsn, application_name=self.application_name,
                                   max_size=self.pool_size, name="pgtasks-async-enqueue",
                                   preparing=self.preparing)
            await pool.open()
            # Another coroutine of this loop may have opened one during our awaits: use theirs.
            existing = self._async_pools.get(loop)
            if existing is not None and not existing.closed:
                await pool.close()
                return existing
            self._async_pools[loop] = pool
            self._async_pool_closers[loop] = close_with_loop(pool)
        return pool

    def async_pool_of(self, loop: asyncio.AbstractEventLoop) -> AsyncConnectionPool | None:
        """The pool opened on `loop`, if any."""
        return self._async_pools.get(loop)

    def close(self) -> None:
        """Close the sync pool, and the async pools of loops that are neither running nor closed."""
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
        """Close the running loop's async pool, then the sync pool."""
        loop = asyncio.get_running_loop()
        apool = self._async_pools.pop(loop, None)
        closer = self._async_pool_closers.pop(loop, None)
        try:
            if apool is not None:
                await apool.close()
        finally:
            await cancel_and_wait(closer)  # closes the pool too, if the close above did not
        await asyncio.to_thread(self.close)
