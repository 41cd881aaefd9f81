"""Decides whether a worker LISTENs (from --listen and the detected pool modes); logs its connection budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from pgtasks.core.errors import ConfigurationError
from pgtasks.core.logs import log_event
from pgtasks.storage.connections import redact
from pgtasks.storage.poolmode import DEFAULT_TIMEOUT, Detection, PoolMode, adetect_pool_mode
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.worker")

# Shorter when only the connection budget is at stake (--no-listen): startup should not wait long.
INFO_ONLY_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class ListenPlan:
    """How the worker learns about new jobs, and the server connections that costs.

    `database` is the detection on the main DSN, `listener` the one on the listen DSN (the same
    object when both DSNs are equal, None when listening was switched off).
    """

    listen: bool
    reason: str
    database: Detection
    listener: Detection | None
    pool_size: int
    separate_listen_dsn: bool

    def budget(self) -> dict[str, int]:
        """Server connections this worker holds at most: its pool plus the LISTEN connection.

        Through a transaction pooler the pool's connections take a server connection only for the
        length of a transaction, so the pool's share is a peak, not a constant.
        """
        listener = 1 if self.listen else 0
        return {"pool": self.pool_size, "listener": listener, "total": self.pool_size + listener}

    def log(self, worker_id: str, *, prepared: str) -> None:
        """`prepared`: "on"/"off" as auto decided on a pool connection, "always" or "never" as set."""
        # One value per field: how long a pool connection holds a server connection in each mode is
        # explained in docs/pgbouncer.md, not repeated in every start-up line.
        budget = self.budget()
        log_event(logger, logging.INFO, "worker.connections", worker_id=worker_id,
                  database_mode=self.database.mode.value, pool=budget["pool"],
                  listener_mode=self.listener.mode.value if self.listen and self.listener else "none",
                  server_connections_max=budget["total"], prepared=prepared)


def describe_connection(conn: AsyncConnection[Any]) -> str:
    """`user@host:port/dbname` of a live connection, as libpq resolved it (DSN, PG* variables,
    defaults): one token for a log line, never the password."""
    info = conn.info
    return f"{info.user}@{info.host}:{info.port}/{info.dbname}"


async def plan_listening(
    store: Store,
    dsn: str,
    listen_dsn: str,
    *,
    listen: bool | None,
    pool_size: int,
    application_name: str,
) -> ListenPlan:
    """Detect the pool mode(s) and decide. `listen`: None = auto, True = required, False = off.

    auto: LISTEN only where a NOTIFY round trip just worked; otherwise poll, and say why.
    True: a transaction pooler on the listen DSN is a ConfigurationError (LISTEN there receives
    nothing); any other doubt is a warning, and the listener's canary keeps checking.
    """
    separate = listen_dsn != dsn
    database = await adetect_pool_mode(
        dsn, store, application_name=application_name, check_listen=listen is not False and not separate,
        timeout=INFO_ONLY_TIMEOUT if listen is False else DEFAULT_TIMEOUT)
    if listen is False:
        return ListenPlan(False, "listening is switched off (--no-listen)", database, None, pool_size, separate)
    listener = database
    if separate:
        listener = await adetect_pool_mode(listen_dsn, store, application_name=application_name)
    which = "--listen-dsn" if separate else "the database URL"
    if listener.mode in (PoolMode.TRANSACTION, PoolMode.STATEMENT):
        if listen:
            raise ConfigurationError(
                f"--listen (listen=True) was given, but {which} {redact(listen_dsn)} goes through a "
                f"{listener.mode.value}-mode pooler ({listener.detail}). LISTEN cannot work there: the pooler "
                "hands the backend that holds the LISTEN to other clients between transactions, so "
                "notifications reach them or are dropped. Give the listener its own direct or "
                "session-pooled connection with --listen-dsn (App(listen_dsn=...)), or drop --listen "
                "to run poll-only."
            )
        return ListenPlan(False, f"{listener.mode.value} pooling detected on {which} ({listener.detail})",
                          database, listener, pool_size, separate)
    if listener.listen_ok:
        return ListenPlan(True, f"LISTEN/NOTIFY works on {which} ({listener.mode.value})",
                          database, listener, pool_size, separate)
    if listen:
        log_event(logger, logging.WARNING, "worker.listen_unverified", listen_dsn=redact(listen_dsn),
                  mode=listener.mode.value, detail=listener.detail,
                  action="listening anyway because --listen was given; the canary checks it")
        return ListenPlan(True, f"--listen given; detection inconclusive ({listener.detail})",
                          database, listener, pool_size, separate)
    return ListenPlan(False, f"LISTEN not usable on {which} ({listener.detail})",
                      database, listener, pool_size, separate)
