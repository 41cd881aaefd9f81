"""Queries of session.sql about the connection itself: its backend, LISTEN and NOTIFY."""

from __future__ import annotations

from typing import Any, LiteralString

from psycopg import AsyncConnection, Connection, sql

from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, execute, one, statement


def _channel_command(template: LiteralString, channel: str) -> Operation[None]:
    # LISTEN/UNLISTEN take an identifier, not a bound parameter: composed with quoting.
    yield execute(sql.SQL(template).format(identifier=sql.Identifier(channel)))


def _backend_pid(query: LiteralString) -> Operation[int]:
    row = yield one(query)
    if row is None:
        raise AssertionError("SELECT pg_backend_pid() returned no row")
    return int(row[0])


class SessionStore(StoreBase):
    def backend_pid(self, conn: Connection[Any]) -> int:
        """pg_backend_pid() of the server process running this statement."""
        return self.run(conn, _backend_pid(self.queries["backend_pid_get"]))

    async def abackend_pid(self, conn: AsyncConnection[Any]) -> int:
        """pg_backend_pid() of the server process running this statement."""
        return await self.arun(conn, _backend_pid(self.queries["backend_pid_get"]))

    def channel_listen(self, conn: Connection[Any], channel: str) -> None:
        self.run(conn, _channel_command(self.queries["channel_listen"], channel))

    async def achannel_listen(self, conn: AsyncConnection[Any], channel: str) -> None:
        await self.arun(conn, _channel_command(self.queries["channel_listen"], channel))

    async def achannel_unlisten(self, conn: AsyncConnection[Any], channel: str) -> None:
        await self.arun(conn, _channel_command(self.queries["channel_unlisten"], channel))

    async def achannel_notify(self, conn: AsyncConnection[Any], channel: str, payload: str) -> None:
        await self.arun(conn, statement(self.queries["channel_notify"], {"channel": channel, "payload": payload}))
