"""Pooler-safe connection settings, DSN checks and connection-pool construction."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgtasks.errors import ConfigurationError

logger = logging.getLogger("pgtasks.connections")


def connection_kwargs(application_name: str) -> dict[str, Any]:
    """Keyword arguments for every pgtasks connection.

    - autocommit: pgtasks opens short explicit transactions itself; psycopg's implicit transaction
      would hold a server connection (and, behind PgBouncer, a pooled backend) until commit.
    - prepare_threshold=None: server-side prepared statements break under transaction pooling
      ("prepared statement _pg3_0 already exists"), and a pooler may be in any path.
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


def make_pool(dsn: str, *, application_name: str, max_size: int, name: str) -> ConnectionPool:
    """A sync pool (closed; call .open()) whose connections follow connection_kwargs()."""
    return ConnectionPool(
        dsn,
        kwargs=connection_kwargs(application_name),
        min_size=0,
        max_size=max_size,
        open=False,
        name=name,
        # A connection found broken is replaced by the pool; idle ones are recycled so a
        # restarted pooler or server is noticed without a check on every checkout.
        max_idle=60.0,
        reconnect_timeout=60.0,
    )


def make_async_pool(dsn: str, *, application_name: str, max_size: int, name: str) -> AsyncConnectionPool:
    """The asyncio twin of make_pool()."""
    return AsyncConnectionPool(
        dsn,
        kwargs=connection_kwargs(application_name),
        min_size=min(1, max_size),
        max_size=max_size,
        open=False,
        name=name,
        max_idle=60.0,
        reconnect_timeout=60.0,
    )
