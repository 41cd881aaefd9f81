"""`pgtasks embedded`: which zero-setup database this folder uses and why, and stopping it."""

from __future__ import annotations

from pathlib import Path

import click

from pgtasks.cli.base import CliState
from pgtasks.cli.output import emit_json, json_option
from pgtasks.storage.embedded import EmbeddedLocation, hidden_above, locate, stop_command, stop_embedded

DATA_DIR_OPTION = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The server's data directory, when it is not the one found from here (see `pgtasks embedded where`)",
)


def _location(state: CliState, data_dir: Path | None) -> EmbeddedLocation:
    """--data-dir, else the app's embedded_dir (with --app), else the one found from the current folder."""
    if data_dir is not None:
        return locate(data_dir, chosen_by="--data-dir")
    if state.app_path:
        return state.app().database.embedded_location()
    return locate()


def _state_of(location: EmbeddedLocation) -> str:
    pid = location.running_pid
    if pid is not None:
        return f"running (pid {pid})"
    if location.exists:
        return "stopped (the next command that needs the database starts it)"
    return "not created yet (the first command that needs the database creates it here)"


def _not_in_use(state: CliState) -> str | None:
    """Why no command here uses the embedded server (a database URL is configured), else None."""
    if state.database_url:
        return "--database-url (or $PGTASKS_DATABASE_URL) names the database"
    if state.app_path:
        source = state.app().database.database_url_source
        if source is not None:
            return f"the app's {source} names the database"
    return None


@click.group()
def embedded() -> None:
    """The embedded PostgreSQL used when no database URL is configured."""


@embedded.command()
@DATA_DIR_OPTION
@json_option
@click.pass_obj
def stop(state: CliState, data_dir: Path | None, as_json: bool) -> None:
    """Stop the embedded server of this project (found as `pgtasks embedded where` says)."""
    directory = _location(state, data_dir).data_dir
    stopped = stop_embedded(directory)
    if as_json:
        emit_json({"data_dir": str(directory), "stopped": stopped})
    elif stopped:
        click.echo(f"stopped the embedded PostgreSQL in {directory}")
    else:
        click.echo(f"no embedded PostgreSQL is running in {directory}")


@embedded.command()
@DATA_DIR_OPTION
@json_option
@click.pass_obj
def where(state: CliState, data_dir: Path | None, as_json: bool) -> None:
    """Print the data directory of this project's embedded server (the first line), and why it is that one.

    Starts nothing and creates nothing.
    """
    location = _location(state, data_dir)
    if as_json:
        emit_json({"data_dir": str(location.data_dir), "why": location.reason, "running_pid": location.running_pid,
                   "exists": location.exists, "not_in_use": _not_in_use(state), "stop": stop_command(location)})
        return
    click.echo(str(location.data_dir))
    click.echo(f"  why:    {location.reason}")
    click.echo(f"  state:  {_state_of(location)}")
    not_in_use = _not_in_use(state)
    if not_in_use is not None:
        click.echo(f"  in use: no, {not_in_use}")
    click.echo(f"  stop:   {stop_command(location)}")
    for hidden in hidden_above(location):
        click.echo(f"  note:   it hides {hidden}, further up in the project; to use that one, stop this server "
                   f"and delete {location.data_dir.parent}")
