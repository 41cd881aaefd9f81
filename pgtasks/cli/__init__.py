"""The `pgtasks` command line: a click group whose subcommands live one per module."""

from __future__ import annotations

from pgtasks.cli.base import main
from pgtasks.cli.bench import bench_command
from pgtasks.cli.embedded import embedded
from pgtasks.cli.leader import leader
from pgtasks.cli.migrate import migrate
from pgtasks.cli.periodic import periodic
from pgtasks.cli.worker import worker

main.add_command(worker)
main.add_command(migrate)
main.add_command(embedded)
main.add_command(leader)  # issue 3
main.add_command(periodic)  # issue 3
main.add_command(bench_command)  # issue 5

__all__ = ["main"]
