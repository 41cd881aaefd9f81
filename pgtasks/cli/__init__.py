"""The `pgtasks` command line: a click group whose subcommands live one per module."""

from __future__ import annotations

from pgtasks.cli.base import main
from pgtasks.cli.bench import bench_command
from pgtasks.cli.dashboard import dashboard
from pgtasks.cli.doctor import doctor
from pgtasks.cli.embedded import embedded
from pgtasks.cli.jobs import jobs
from pgtasks.cli.leader import leader
from pgtasks.cli.migrate import migrate
from pgtasks.cli.periodic import periodic
from pgtasks.cli.queues import queues
from pgtasks.cli.stats import stats
from pgtasks.cli.worker import worker
from pgtasks.cli.workers import workers
from pgtasks.cli.workflows import workflows

main.add_command(worker)
main.add_command(migrate)
main.add_command(embedded)
main.add_command(leader)
main.add_command(periodic)
main.add_command(bench_command)
main.add_command(jobs)
main.add_command(queues)
main.add_command(stats)
main.add_command(doctor)
main.add_command(workers)
main.add_command(dashboard)
main.add_command(workflows)

__all__ = ["main"]
