"""The root `pgtasks` group: finds the App (--app / PGTASKS_APP) and the database (--database-url)."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import click

from pgtasks.app import App
from pgtasks.core.errors import PgtasksError
from pgtasks.storage.database import DATABASE_URL_ENV

APP_ENV = "PGTASKS_APP"


@dataclass
class CliState:
    app_path: str | None
    database_url: str | None
    schema: str | None
    _app: App | None = None

    def app(self, *, required: bool = False) -> App:
        """The user's App (imported from --app), or a bare App for commands that need no tasks."""
        if self._app is None:
            if self.app_path:
                self._app = load_app(self.app_path)
            elif required:
                raise click.UsageError(
                    "this command needs your tasks: pass --app module:attribute (or set PGTASKS_APP), "
                    "e.g. `pgtasks --app myproject.tasks:app worker`"
                )
            else:
                self._app = App(schema=self.schema)
            if self.database_url:
                self._app.use_database_url(self.database_url)
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
    return target


class PgtasksGroup(click.Group):
    """Turns pgtasks errors into a one-line message and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgtasksError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=PgtasksGroup)
@click.option("--app", "app_path", envvar=APP_ENV, metavar="MODULE:ATTR",
              help="Your pgtasks.App, e.g. myproject.tasks:app [env: PGTASKS_APP]")
@click.option("--database-url", envvar=DATABASE_URL_ENV, metavar="DSN",
              help="PostgreSQL DSN; overrides the app's [env: PGTASKS_DATABASE_URL]")
@click.option("--schema", default=None, envvar="PGTASKS_SCHEMA",
              help="Schema holding the pgtasks tables (default: the app's, or pgtasks) [env: PGTASKS_SCHEMA]")
@click.version_option(package_name="pgtasks")
@click.pass_context
def main(ctx: click.Context, app_path: str | None, database_url: str | None, schema: str | None) -> None:
    """pgtasks: background tasks on PostgreSQL."""
    ctx.obj = CliState(app_path, database_url, schema)
