"""`pgtasks doctor`: run the health checks of pgtasks.ops.doctor; exit 1 when one fails (for health checks)."""

from __future__ import annotations

import click

from pgtasks.cli.base import CliState
from pgtasks.cli.output import EXIT_NOT_FOUND, EXIT_USAGE, emit_json, json_option
from pgtasks.ops.doctor import FAIL, WARN, DoctorOptions, run_checks

_MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@click.command()
@click.option("--listen/--no-listen", default=None,
              help="Check as for workers forced to LISTEN (--listen) or polling only; default: auto.")
@click.option("--max-lag", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds a due job may wait before its queue counts as lagging.")
@click.option("--stale-after", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds without a heartbeat before a worker counts as gone.")
@click.option("--long-transaction", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds a transaction may stay open before it is reported.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@json_option
@click.pass_context
def doctor(ctx: click.Context, listen: bool | None, max_lag: float, stale_after: float, long_transaction: float,
           strict: bool, as_json: bool) -> None:
    """Check the database, schema, leader, workers, queues, vacuum, connections and LISTEN.

    Exit status: 0 healthy (warnings allowed unless --strict), 1 a check failed, 2 usage error or
    the database could not be reached (nothing was checked).
    """
    state = ctx.find_object(CliState)
    assert state is not None
    app = state.app()
    findings = run_checks(app, DoctorOptions(listen=listen, max_lag=max_lag, stale_after=stale_after,
                                             long_transaction=long_transaction, database_url=state.database_url))
    unreachable = findings[0].check == "connection" and findings[0].status == FAIL
    failed = [f for f in findings if f.status == FAIL or (strict and f.status == WARN)]
    if as_json:
        emit_json({"ok": not failed, "findings": [f.as_dict() for f in findings]})
    else:
        for finding in findings:
            click.echo(f"[{_MARKS.get(finding.status, finding.status)}] {finding.check:<18} {finding.message}")
            if finding.advice and finding.status in (FAIL, WARN):
                click.echo(f"       {'':<18} -> {finding.advice}")
        if not unreachable:  # its one [FAIL] line says it all
            click.echo("healthy" if not failed else f"{len(failed)} problem(s) found")
    if failed:
        ctx.exit(EXIT_USAGE if unreachable else EXIT_NOT_FOUND)
