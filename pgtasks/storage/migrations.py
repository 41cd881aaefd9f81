"""Numbered SQL migrations: discovery, status, and applying them under a transaction-scoped lock."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, LiteralString

from psycopg import AsyncConnection, Connection
from psycopg.pq import TransactionStatus

from pgtasks.core.errors import SchemaNotMigratedError
from pgtasks.storage.base import StoreBase
from pgtasks.storage.queries import render
from pgtasks.storage.steps import Operation, every, execute, one

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
Queries = Mapping[str, LiteralString]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None


def available_migrations() -> list[Migration]:
    """All migrations shipped with this version of pgtasks, in order."""
    found: list[Migration] = []
    for entry in resources.files("pgtasks.sql.migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files must be numbered 1..n without gaps, found {versions}")
    return found


def latest_version() -> int:
    return available_migrations()[-1].version


def require_latest(schema: str, version: int) -> None:
    """Raise SchemaNotMigratedError unless `version` (the schema's) is at least this code's latest."""
    expected = latest_version()
    if version < expected:
        raise SchemaNotMigratedError(
            f"schema {schema!r} is at migration {version} but this pgtasks needs {expected}; run `pgtasks migrate`"
        )


# -- operations (see pgtasks.storage.steps) ----------------------------------------------------------


def _current_version(q: Queries) -> Operation[int]:
    row = yield one(q["migration_current_version"])
    return int(row[0]) if row else 0


def _applied(q: Queries) -> Operation[dict[int, datetime]]:
    rows = yield every(q["migration_list_applied"])
    return {int(version): applied_at for version, _name, applied_at in rows}


def _apply(q: Queries, schema: str, migrations: Sequence[Migration], up_to: int | None) -> Operation[list[Migration]]:
    yield execute(q["migration_lock"], {"schema": schema})
    yield execute(q["migration_ensure_schema"])
    yield execute(q["migration_ensure_table"])
    done = yield from _applied(q)
    applied: list[Migration] = []
    for migration in migrations:
        if migration.version in done or (up_to is not None and migration.version > up_to):
            continue
        yield execute(render(migration.sql, schema))
        yield execute(q["migration_record"], {"version": migration.version, "name": migration.name})
        applied.append(migration)
    return applied


class MigrationStore(StoreBase):
    def migration_current_version(self, conn: Connection[Any]) -> int:
        return self.run(conn, _current_version(self.queries))

    async def amigration_current_version(self, conn: AsyncConnection[Any]) -> int:
        return await self.arun(conn, _current_version(self.queries))

    def migration_applied(self, conn: Connection[Any]) -> dict[int, datetime]:
        """Applied versions with their times; empty when the schema was never migrated."""
        try:
            # In a transaction (a savepoint inside the caller's): a missing table must not abort it.
            return self.run(conn, _applied(self.queries), transaction=True)
        except SchemaNotMigratedError:
            return {}

    def migration_apply(self, conn: Connection[Any], up_to: int | None = None) -> list[Migration]:
        """Apply pending migrations (up to version `up_to`) in one transaction, under the migration lock."""
        return self.run(conn, _apply(self.queries, self.schema, available_migrations(), up_to), transaction=True)


def status(conn: Connection[Any], schema: str) -> list[MigrationStatus]:
    """Every known migration with the time it was applied, or None while pending."""
    applied = MigrationStore(schema).migration_applied(conn)
    return [MigrationStatus(m.version, m.name, applied.get(m.version)) for m in available_migrations()]


def pending_sql(conn: Connection[Any], schema: str) -> list[tuple[Migration, str]]:
    """The migrations not yet applied, each with the exact SQL that would run (for --dry-run)."""
    applied = MigrationStore(schema).migration_applied(conn)
    return [(m, render(m.sql, schema)) for m in available_migrations() if m.version not in applied]


def migrate(conn: Connection[Any], schema: str, *, up_to: int | None = None) -> list[Migration]:
    """Apply pending migrations in one transaction; concurrent callers wait, then find nothing to do.

    `up_to` stops after that version (default: the latest), so an upgrade from an older schema can
    be reproduced: apply 1 alone, fill it, then migrate the rest. The lock is
    pg_advisory_xact_lock, released at commit, so it is safe behind a transaction pooler.
    """
    if conn.autocommit is False and conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("migrate() needs a connection that is not inside a transaction")
    return MigrationStore(schema).migration_apply(conn, up_to)
