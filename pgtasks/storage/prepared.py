"""Whether psycopg may prepare statements on a connection: decided per connection, when it opens.

Server-side prepared statements save the planning of every repeated statement (x1.47 on a
single-job INSERT, x1.09 on the worker's claim and outcome writes, on a direct connection), and
break behind a transaction pooler: the pooler hands the backend that holds a client's statement
to other clients between transactions ("prepared statement "_pg3_0" already exists", "... does not
exist", or another client's statement run silently). So each new connection is checked: PgBouncer
forges the cancel key (BackendKeyData), so a connection whose key names another process than
`SELECT pg_backend_pid()` goes through a pooler. Only a connection that reaches PostgreSQL itself
prepares. The check costs one round trip per new connection; pool connections live for minutes.
A pooler that passed the real backend pid through would defeat the check: the statement driver
(pgtasks.storage.steps) then turns preparing off on a connection at its first prepared-statement
error, and says which setting to turn off.

The setting (App(prepared_statements=...), $PGTASKS_PREPARED_STATEMENTS):
- auto (the default): prepare on connections found direct, never behind a pooler;
- on: prepare on every connection without checking (a pooler that supports protocol-level
  prepared statements, such as PgBouncer 1.21+ with max_prepared_statements; the user's choice);
- off: never prepare. "off" from either source wins over the other.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection, Connection

from pgtasks.core.errors import ConfigurationError
from pgtasks.storage.session import SessionStore

PREPARED_STATEMENTS_ENV = "PGTASKS_PREPARED_STATEMENTS"
# psycopg's own default: a statement is prepared on its 6th run on a connection. pgtasks' hot
# statements (the claim, the outcome write, the single-job INSERT) run thousands of times, so a
# lower value gains nothing measurable, and this one leaves one-off statements unprepared.
PREPARE_THRESHOLD = 5


class PreparedStatements(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


_SPELLINGS: dict[object, PreparedStatements] = {
    "auto": PreparedStatements.AUTO, "on": PreparedStatements.ON, "off": PreparedStatements.OFF,
    True: PreparedStatements.ON, False: PreparedStatements.OFF,
}


def _parse(value: object, name: str) -> PreparedStatements:
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, (str, bool)) and key in _SPELLINGS:
        return _SPELLINGS[key]
    raise ConfigurationError(f"{name}={value!r}: expected 'auto' (prepare on direct connections only), "
                             "'on' (True) or 'off' (False)")


def resolve_prepared_statements(value: str | bool | None) -> PreparedStatements:
    """The setting from App(prepared_statements=value) and $PGTASKS_PREPARED_STATEMENTS.

    "off" from either wins (the operator's switch must work whatever the code says, and the
    code's whatever the environment says); otherwise the argument, then the variable, then auto.
    """
    given = None if value is None else _parse(value, "prepared_statements")
    env_value = os.environ.get(PREPARED_STATEMENTS_ENV, "").strip()
    env = _parse(env_value, f"${PREPARED_STATEMENTS_ENV}") if env_value else None
    if PreparedStatements.OFF in (given, env):
        return PreparedStatements.OFF
    return given or env or PreparedStatements.AUTO


class Preparing:
    """Sets prepare_threshold on a new connection, once: pgtasks' pools call it at a connection's
    first checkout, connect() right after connecting.

    Connections are made with prepare_threshold=None (see connection_kwargs), so a connection
    this never configured never prepares. A failed check raises the statement's error (a lost
    connection, PgBouncer's query_wait_timeout) and leaves the connection unprepared.
    """

    def __init__(self, setting: PreparedStatements, schema: str) -> None:
        self.setting = setting
        self._store = SessionStore(schema)

    def configure(self, conn: Connection[Any]) -> None:
        if self.setting is PreparedStatements.ON:
            conn.prepare_threshold = PREPARE_THRESHOLD
        elif self.setting is PreparedStatements.AUTO:
            direct = conn.info.backend_pid == self._store.backend_pid(conn)
            conn.prepare_threshold = PREPARE_THRESHOLD if direct else None

    async def aconfigure(self, conn: AsyncConnection[Any]) -> None:
        if self.setting is PreparedStatements.ON:
            conn.prepare_threshold = PREPARE_THRESHOLD
        elif self.setting is PreparedStatements.AUTO:
            direct = conn.info.backend_pid == await self._store.abackend_pid(conn)
            conn.prepare_threshold = PREPARE_THRESHOLD if direct else None

    def describe(self, conn: Connection[Any] | AsyncConnection[Any]) -> str:
        """For a log line: "on" or "off" as auto found `conn`, "always" (setting on) or "never" (off)."""
        if self.setting is PreparedStatements.AUTO:
            return "off" if conn.prepare_threshold is None else "on"
        return "always" if self.setting is PreparedStatements.ON else "never"
