"""`pgtasks embedded`: where the zero-setup database lives, and stopping it."""

from __future__ import annotations

import click

from pgtasks.storage.embedded import default_data_dir, stop_embedded


@click.group()
def embedded() -> None:
    """The embedded PostgreSQL used when no database URL is configured."""


@embedded.command()
def stop() -> None:
    """Stop the embedded server of this project directory."""
    directory = default_data_dir()
    if stop_embedded(directory):
        click.echo(f"stopped the embedded PostgreSQL in {directory}")
    else:
        click.echo(f"no embedded PostgreSQL is running in {directory}")


@embedded.command()
def where() -> None:
    """Print the data directory of this project's embedded server."""
    click.echo(str(default_data_dir()))
