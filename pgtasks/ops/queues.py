"""Which queues are in use, and by what: unfinished jobs, workers' heartbeats, registered tasks.

A queue is only a name: it exists as long as something names it. `pgtasks queues pause` warns
about a name nothing uses (a typo would otherwise sit in `queues list` for good), and
`pgtasks doctor` about queues whose jobs wait with no live worker serving them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import Connection

from pgtasks.core.models import WorkerInfo

if TYPE_CHECKING:
    from pgtasks.app import App

# Seconds without a heartbeat after which a worker no longer counts as serving its queues
# (doctor's --stale-after default).
STALE_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class QueueUse:
    """One queue name and everything that uses it."""

    name: str
    waiting: int = 0  # available, scheduled or retryable jobs
    running: int = 0
    listed: bool = False  # shown by `queues list`: it has unfinished jobs or an entry in <schema>.queues
    paused: bool = False
    live_workers: tuple[str, ...] = ()
    silent_workers: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()  # tasks of the App that declare this queue

    @property
    def used(self) -> bool:
        """Something besides its own entry names it: jobs, a worker (even a silent one), a task."""
        return bool(self.waiting or self.running or self.live_workers or self.silent_workers or self.tasks)

    @property
    def stray(self) -> bool:
        """Listed only because of its entry (a pause, perhaps of a typo): `queues remove` drops it."""
        return self.listed and not self.used

    @property
    def unserved(self) -> bool:
        """Jobs wait and no live worker runs this queue: they wait until one starts."""
        return self.waiting > 0 and not self.live_workers


def queue_uses(app: App, conn: Connection[Any], *, stale_after: float = STALE_AFTER) -> dict[str, QueueUse]:
    """Every queue named by a job, a worker row, an App task or a queue entry, by name."""
    stats = {str(row["queue"]): row for row in app.store.queue_stats(conn)}
    workers = app.store.worker_list(conn)
    tasks = _tasks_by_queue((name, task.config.queue) for name, task in app.registry.tasks.items())
    names = set(stats) | {queue for w in workers for queue in w.queues} | set(tasks)
    return {name: _use(name, stats.get(name), workers, tasks.get(name, ()), stale_after) for name in sorted(names)}


def in_use(uses: Mapping[str, QueueUse], name: str) -> bool:
    return name in uses and uses[name].used


def used_names(uses: Mapping[str, QueueUse]) -> list[str]:
    """The queue names something uses, sorted: what to suggest instead of an unknown name."""
    return [name for name, use in uses.items() if use.used]


def _tasks_by_queue(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    found: defaultdict[str, list[str]] = defaultdict(list)
    for task, queue in pairs:
        found[queue].append(task)
    return {queue: tuple(sorted(names)) for queue, names in found.items()}


def _use(name: str, stats: Mapping[str, Any] | None, workers: Sequence[WorkerInfo], tasks: tuple[str, ...],
         stale_after: float) -> QueueUse:
    serving = [w for w in workers if name in w.queues]
    waiting = running = 0
    if stats is not None:
        waiting = int(stats["available"]) + int(stats["scheduled"]) + int(stats["retryable"])
        running = int(stats["running"])
    return QueueUse(
        name, waiting=waiting, running=running,
        listed=stats is not None,
        paused=stats is not None and stats["paused_at"] is not None,
        live_workers=tuple(w.worker_id for w in serving if w.seen_ago_s <= stale_after),
        silent_workers=tuple(w.worker_id for w in serving if w.seen_ago_s > stale_after),
        tasks=tasks,
    )
