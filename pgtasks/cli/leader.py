"""`pgtasks leader`: which worker leads, since when, in which term, and until when its lease runs."""

from __future__ import annotations

import click

from pgtasks.cli.base import CliState
from pgtasks.cli.output import emit_json, json_option


@click.command()
@json_option
@click.pass_context
def leader(ctx: click.Context, as_json: bool) -> None:
    """Show the elected leader (exit 1 when no worker currently holds the lease)."""
    app = ctx.find_object(CliState).app()  # type: ignore[union-attr]
    with app.connect() as conn:
        lease = app.store.leader_get(conn)
    if as_json:
        emit_json(lease)  # null when no leader was ever elected
    elif lease is None:
        click.echo(f"schema {app.schema}: no leader has been elected yet (no worker has run)")
    else:
        assert lease.db_now is not None
        since = lease.elected_at.isoformat(timespec="seconds")
        held_for = (lease.db_now - lease.elected_at).total_seconds()
        left = (lease.expires_at - lease.db_now).total_seconds()
        if lease.active:
            click.echo(f"leader:  {lease.leader_id}\nterm:    {lease.term}\nsince:   {since} ({held_for:.0f}s ago)\n"
                       f"lease:   expires in {left:.1f}s (renewed while the leader is alive)")
        else:
            click.echo(f"no leader: the last one, {lease.leader_id} (term {lease.term}, since {since}), "
                       f"resigned or lost its lease {-left:.1f}s ago; a running worker takes over within its TTL")
    if lease is None or not lease.active:
        ctx.exit(1)
