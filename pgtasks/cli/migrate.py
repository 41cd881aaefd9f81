"""`pgtasks migrate`: apply, preview (--dry-run) and list (status) schema migrations."""

from __future__ import annotations

import click

from pgtasks.cli.base import CliState
from pgtasks.storage import migrations


@click.group(invoke_without_command=True)
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run, change nothing.")
@click.pass_context
def migrate(ctx: click.Context, dry_run: bool) -> None:
    """Apply pending migrations (idempotent; concurrent runs are safe)."""
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(CliState).app()  # type: ignore[union-attr]
    with app.connect() as conn:
        if dry_run:
            pending = migrations.pending_sql(conn, app.schema)
            if not pending:
                click.echo(f"schema {app.schema}: up to date, nothing to apply")
            for migration, sql in pending:
                click.echo(f"-- migration {migration.version:04d}_{migration.name}\n{sql}\n")
            return
        applied = migrations.migrate(conn, app.schema)
    if applied:
        for migration in applied:
            click.echo(f"applied {migration.version:04d}_{migration.name}")
    else:
        click.echo(f"schema {app.schema}: up to date (version {migrations.latest_version()})")


@migrate.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """List migrations and when each was applied; exit 1 if any is pending."""
    app = ctx.find_object(CliState).app()  # type: ignore[union-attr]
    with app.connect() as conn:
        rows = migrations.status(conn, app.schema)
    pending = 0
    for row in rows:
        when = row.applied_at.isoformat(timespec="seconds") if row.applied_at else "pending"
        pending += row.applied_at is None
        click.echo(f"{row.version:04d}  {row.name:<24} {when}")
    if pending:
        click.echo(f"{pending} pending: run `pgtasks migrate`", err=True)
        ctx.exit(1)
