"""The `pgtasks` command line: a click group whose subcommands live one per module."""

from __future__ import annotations

from pgtasks.cli.base import main
from pgtasks.cli.bench import bench_command
from pgtasks.cli.doctor import doctor
from pgtasks.cli.embedded import embedded
from pgtasks.cli.jobs import jobs
from pgtasks.cli.leader import leader
from pgtasks.cli.migrate import migrate
from pgtasks.cli.periodic import periodic
from pgtasks.cli.queues import queues
from pgtasks.cli.stats import stats
from pgtasks.cli.worker import worker

main.add_command(worker)
main.add_command(migrate)
main.add_command(embedded)
main.add_command(leader)  # issue 3
main.add_command(periodic)  # issue 3
main.add_command(bench_command)  # issue 5
main.add_command(jobs)  # issue 6
main.add_command(queues)  # issue 6
main.add_command(stats)  # issue 6
main.add_command(doctor)  # issue 6

__all__ = ["main"]
