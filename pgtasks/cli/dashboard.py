"""`pgtasks dashboard`: serve the web dashboard (needs `pip install 'pgtasks[dashboard]'`)."""

from __future__ import annotations

import click

from pgtasks.cli.base import CliState
from pgtasks.core.errors import ConfigurationError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback needs --auth.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--base-path", default="", help="Serve under this URL path, e.g. /tasks (behind a proxy).")
@click.option("--read-only", is_flag=True, help="No actions for anyone: nothing can be retried, cancelled, paused.")
@click.option("--auth", "auth", envvar="PGTASKS_DASHBOARD_AUTH", metavar="USER:PASSWORD",
              help="HTTP basic auth login with full access [env PGTASKS_DASHBOARD_AUTH].")
@click.option("--read-auth", "read_auth", envvar="PGTASKS_DASHBOARD_READ_AUTH", metavar="USER:PASSWORD",
              help="HTTP basic auth login that may only look [env PGTASKS_DASHBOARD_READ_AUTH].")
@click.option("--refresh-interval", default=2.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds between live polls, and how long the overview is cached.")
@click.option("--listen/--no-listen", default=None,
              help="Push updates by LISTEN (default: when it works on the listen DSN) or always poll.")
@click.pass_context
def dashboard(ctx: click.Context, host: str, port: int, base_path: str, read_only: bool, auth: str | None,
              read_auth: str | None, refresh_interval: float, listen: bool | None) -> None:
    """Serve the web dashboard: queues, jobs, workers and periodic schedules, live.

    Pass --app to see your periodic schedules and task names; without it, every job is still shown."""
    try:
        # Imported here: the extra is optional, and every other command must work without it.
        from pgtasks.dashboard.auth import Access, Credential  # noqa: PLC0415
        from pgtasks.dashboard.serve import serve  # noqa: PLC0415
    except ImportError as exc:
        raise click.UsageError(f"the dashboard needs its extra: pip install 'pgtasks[dashboard]' ({exc})") from exc
    try:
        credentials = [Credential.parse(auth, Access.FULL, option="--auth")] if auth else []
        if read_auth:
            credentials.append(Credential.parse(read_auth, Access.READ, option="--read-auth"))
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from exc
    app = ctx.find_object(CliState).app()  # type: ignore[union-attr]
    serve(app, host=host, port=port, base_path=base_path, read_only=read_only, credentials=credentials,
          refresh_interval=refresh_interval, listen=listen)
