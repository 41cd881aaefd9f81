"""The root `pgtasks` group: finds the App (--app / PGTASKS_APP) and the database (--database-url)."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import click

from pgtasks.app import App
from pgtasks.cli.output import EXIT_USAGE, JSON_REQUESTED, CommandFailed, emit_json, error_document
from pgtasks.core.errors import PgtasksError
from pgtasks.storage.database import DATABASE_URL_ENV

APP_ENV = "PGTASKS_APP"


@dataclass
class CliState:
    app_path: str | None
    database_url: str | None
    schema: str | None
    connect_timeout: int | None = None
    _app: App | None = None

    def app(self, *, required: bool = False) -> App:
        """The user's App (imported from --app), or a bare App for commands that need no tasks."""
        if self._app is None:
            if self.app_path:
                self._app = load_app(self.app_path)
            elif required:
                raise click.UsageError(
                    "this command needs your tasks: pass --app module:attribute (or set PGTASKS_APP), "
                    f"e.g. `pgtasks --app myproject.tasks:app {_subcommand()}`"
                )
            else:
                self._app = App(schema=self.schema)
            if self.database_url:
                self._app.use_database_url(self.database_url)
            if self.connect_timeout is not None:
                self._app.database.connect_timeout = self.connect_timeout
            if self.schema and self.schema != self._app.schema:
                raise click.UsageError(
                    f"--schema {self.schema} differs from the app's schema {self._app.schema!r}; drop one of them"
                )
        return self._app


def load_app(path: str) -> App:
    """Import `module:attribute` (attribute defaults to `app`) from the current directory."""
    module_name, _, attribute = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.UsageError(f"--app {path}: cannot import module {module_name!r}: {exc}") from exc
    target: Any = module
    for part in (attribute or "app").split("."):
        target = getattr(target, part, None)
        if target is None:
            raise click.UsageError(f"--app {path}: module {module_name!r} has no attribute {attribute or 'app'!r}")
    if callable(target) and not isinstance(target, App):
        target = target()
    if not isinstance(target, App):
        raise click.UsageError(f"--app {path}: expected a pgtasks.App, found {type(target).__name__}")
    target.load_tasks()  # its include= / autodiscover() modules: every command sees all the tasks
    return target


def _subcommand() -> str:
    """The running command as typed after `pgtasks` (`periodic`, `jobs list`), for examples.

    From the context chain, not ctx.command_path: the root's name is however pgtasks was started
    (`pgtasks`, `python -m pgtasks`), so its words cannot be counted off."""
    ctx = click.get_current_context(silent=True)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(names) or "worker"


class PgtasksGroup(click.Group):
    """Every error a command raises becomes one line on stderr, or with --json one JSON document on
    stdout, and its exit code: 2 for pgtasks errors (configuration, database), 1 for a command that
    found nothing to do (CommandFailed). Never a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Before any parsing: a usage error in the subcommand's own options must still be JSON.
        ctx.meta[JSON_REQUESTED] = "--json" in args
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CommandFailed as exc:
            _report(ctx, exc.kind, exc.format_message(), exc.exit_code, text=exc.format_message())
        except PgtasksError as exc:
            _report(ctx, type(exc).__name__, str(exc), EXIT_USAGE, text=f"Error: {exc}")
        except click.ClickException as exc:
            if not ctx.meta.get(JSON_REQUESTED):
                raise  # click prints usage errors itself, with the usage line
            _report(ctx, type(exc).__name__, exc.format_message(), exc.exit_code, text="")


def _report(ctx: click.Context, kind: str, message: str, exit_code: int, *, text: str) -> None:
    if ctx.meta.get(JSON_REQUESTED):
        emit_json(error_document(kind, message, exit_code))
    else:
        click.echo(text, err=True)
    ctx.exit(exit_code)


@click.group(cls=PgtasksGroup)
@click.option("--app", "-A", "app_path", envvar=APP_ENV, metavar="MODULE:ATTR",
              help="Your pgtasks.App, e.g. myproject.tasks:app (-A as in Celery) [env: PGTASKS_APP]")
@click.option("--database-url", envvar=DATABASE_URL_ENV, metavar="DSN",
              help="PostgreSQL DSN; overrides the app's [env: PGTASKS_DATABASE_URL]")
@click.option("--schema", default=None, envvar="PGTASKS_SCHEMA",
              help="Schema holding the pgtasks tables (default: the app's, or pgtasks) [env: PGTASKS_SCHEMA]")
@click.option("--connect-timeout", type=click.IntRange(min=0), default=None, envvar="PGTASKS_CONNECT_TIMEOUT",
              metavar="SECONDS", help="Seconds a database connection may take to open; 0 waits forever "
              "(default: the DSN's connect_timeout, else 5) [env: PGTASKS_CONNECT_TIMEOUT]")
@click.version_option(package_name="pgtasks")
@click.pass_context
def main(ctx: click.Context, app_path: str | None, database_url: str | None, schema: str | None,
         connect_timeout: int | None) -> None:
    """pgtasks: background tasks on PostgreSQL."""
    ctx.obj = CliState(app_path, database_url, schema, connect_timeout)
