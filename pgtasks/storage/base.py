"""What every domain part of the Store shares: its schema's named queries and the two drivers."""

from __future__ import annotations

import contextlib
from typing import Any, LiteralString, TypeVar

from psycopg import AsyncConnection, Connection

from pgtasks.storage.queries import queries_for
from pgtasks.storage.steps import Operation, arun, run, translate_errors

T = TypeVar("T")


class StoreBase:
    """Named queries of one schema (`queries`), and run()/arun() for the operations built on them."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.queries: dict[str, LiteralString] = queries_for(schema)

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """psycopg errors raised inside the block become pgtasks errors."""
        return translate_errors(self.schema)

    def run(self, conn: Connection[Any], operation: Operation[T], *, transaction: bool = False) -> T:
        return run(conn, operation, schema=self.schema, transaction=transaction)

    async def arun(self, conn: AsyncConnection[Any], operation: Operation[T], *, transaction: bool = False) -> T:
        return await arun(conn, operation, schema=self.schema, transaction=transaction)
