"""`pgtasks migrate`: apply, preview (--dry-run) and list (status) schema migrations."""

from __future__ import annotations

from typing import Any

import click

from pgtasks.cli.base import CliState
from pgtasks.cli.output import EXIT_NOT_FOUND, emit_json, json_option
from pgtasks.storage import migrations


def _named(migration: migrations.Migration) -> dict[str, Any]:
    return {"version": migration.version, "name": migration.name}


@click.group(invoke_without_command=True)
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run, change nothing.")
@json_option
@click.pass_context
def migrate(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Apply pending migrations (idempotent; concurrent runs are safe)."""
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(CliState).app()  # type: ignore[union-attr]
    with app.connect() as conn:
        if dry_run:
            pending = migrations.pending_sql(conn, app.schema)
            if as_json:
                emit_json({"schema": app.schema, "pending": [{**_named(m), "sql": sql} for m, sql in pending]})
                return
            if not pending:
                click.echo(f"schema {app.schema}: up to date, nothing to apply")
            for migration, sql in pending:
                click.echo(f"-- migration {migration.version:04d}_{migration.name}\n{sql}\n")
            return
        applied = migrations.migrate(conn, app.schema)
    if as_json:
        emit_json({"schema": app.schema, "applied": [_named(m) for m in applied],
                   "version": migrations.latest_version()})
    elif applied:
        for migration in applied:
            click.echo(f"applied {migration.version:04d}_{migration.name}")
    else:
        click.echo(f"schema {app.schema}: up to date (version {migrations.latest_version()})")


@migrate.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """List migrations and when each was applied; exit 1 if any is pending."""
    app = ctx.find_object(CliState).app()  # type: ignore[union-attr]
    with app.connect() as conn:
        rows = migrations.status(conn, app.schema)
    pending = sum(row.applied_at is None for row in rows)
    if as_json:
        emit_json({"schema": app.schema, "pending": pending,
                   "migrations": [{"version": r.version, "name": r.name, "applied_at": r.applied_at} for r in rows]})
    else:
        for row in rows:
            when = row.applied_at.isoformat(timespec="seconds") if row.applied_at else "pending"
            click.echo(f"{row.version:04d}  {row.name:<24} {when}")
        if pending:
            click.echo(f"{pending} pending: run `pgtasks migrate`", err=True)
    if pending:
        ctx.exit(EXIT_NOT_FOUND)
