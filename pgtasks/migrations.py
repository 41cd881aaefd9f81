"""Numbered SQL migrations: discovery, status, and applying them under a transaction-scoped lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg import Connection

from pgtasks.queries import render
from pgtasks.store import Store

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


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


def _applied(conn: Connection[Any], store: Store) -> dict[int, datetime]:
    try:
        with conn.transaction():
            rows = conn.execute(store.q["migration_list_applied"]).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return {}
    return {int(version): applied_at for version, _name, applied_at in rows}


def status(conn: Connection[Any], schema: str) -> list[MigrationStatus]:
    """Every known migration with the time it was applied, or None while pending."""
    applied = _applied(conn, Store(schema))
    return [MigrationStatus(m.version, m.name, applied.get(m.version)) for m in available_migrations()]


def pending_sql(conn: Connection[Any], schema: str) -> list[tuple[Migration, str]]:
    """The migrations not yet applied, each with the exact SQL that would run (for --dry-run)."""
    applied = _applied(conn, Store(schema))
    return [(m, render(m.sql, schema)) for m in available_migrations() if m.version not in applied]


def migrate(conn: Connection[Any], schema: str, *, up_to: int | None = None) -> list[Migration]:
    """Apply pending migrations in one transaction; concurrent callers wait, then find nothing to do.

    `up_to` stops after that version (default: the latest), so an upgrade from an older schema can
    be reproduced: apply 1 alone, fill it, then migrate the rest. The lock is
    pg_advisory_xact_lock, released at commit, so it is safe behind a transaction pooler.
    """
    store = Store(schema)
    if conn.autocommit is False and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("migrate() needs a connection that is not inside a transaction")
    applied_now: list[Migration] = []
    with store.errors(), conn.transaction():
        conn.execute(store.q["migration_lock"], {"schema": schema})
        conn.execute(store.q["migration_ensure_schema"])
        conn.execute(store.q["migration_ensure_table"])
        done = {int(row[0]) for row in conn.execute(store.q["migration_list_applied"]).fetchall()}
        for migration in available_migrations():
            if migration.version in done or (up_to is not None and migration.version > up_to):
                continue
            conn.execute(render(migration.sql, schema))
            conn.execute(store.q["migration_record"], {"version": migration.version, "name": migration.name})
            applied_now.append(migration)
    return applied_now
