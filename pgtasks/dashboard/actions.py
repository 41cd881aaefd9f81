"""The dashboard's state-changing actions, each logged with who did what to how many jobs.

Bulk actions work on a selection of ids or on everything matching the jobs page's filters. The
latter runs in batches of `BATCH` ids walked newest first by keyset, each batch its own short
transaction, so a million-row retry never holds a million locks.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pgtasks.core.channels import control_channel, jobs_channel
from pgtasks.core.errors import ConfigurationError
from pgtasks.core.logs import log_event
from pgtasks.core.options import validate_queue
from pgtasks.dashboard.data import connection
from pgtasks.dashboard.filters import JobFilter
from pgtasks.ops import limits

if TYPE_CHECKING:
    from psycopg import Connection

    from pgtasks.app import App

logger = logging.getLogger("pgtasks.dashboard")

BATCH = 1000
JobAction = Literal["retry", "cancel", "delete"]
JOB_ACTIONS: tuple[JobAction, ...] = ("retry", "cancel", "delete")


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: str
    requested: int  # ids selected, or jobs the filter matched when confirmed
    affected: int  # jobs the action changed (others were in a state it does not apply to)

    def summary(self) -> str:
        verb = {"retry": "retried", "cancel": "cancelled or asked to cancel", "delete": "deleted"}.get(
            self.action, self.action)
        skipped = self.requested - self.affected
        tail = (f"; {skipped} left as they were (not in a state this applies to, or held by a worker at that "
                "moment)") if skipped > 0 else ""
        return f"{self.affected} job{'s' if self.affected != 1 else ''} {verb}{tail}"


def _apply(app: App, action: JobAction, who: str) -> Callable[[Connection[object], Sequence[int]], int]:
    schema = app.schema

    def apply(conn: Connection[object], ids: Sequence[int]) -> int:
        if action == "retry":
            return len(app.store.job_retry_many(conn, ids=ids, limit=len(ids), channel=jobs_channel(schema)))
        if action == "cancel":
            done = app.store.job_cancel_many(conn, ids, reason=f"cancelled from the dashboard by {who}",
                                             control=control_channel(schema))
            return len(done)
        return len(app.store.dashboard_job_delete_many(conn, ids))
    return apply


@contextlib.contextmanager
def _audited(who: str, action: str, **target: object) -> Iterator[list[int]]:
    """Log the action's one audit line when it ends, also when a batch failed part-way (the batches
    before it are committed): `counts` is [requested, affected] as far as it got."""
    counts = [0, 0]
    error: str | None = None
    try:
        yield counts
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        log_event(logger, logging.WARNING if error else logging.INFO, "dashboard.action", who=who, action=action,
                  **target, requested=counts[0], affected=counts[1], **({"error": error} if error else {}))


def run_on_ids(app: App, action: JobAction, ids: Sequence[int], *, who: str) -> ActionResult:
    apply = _apply(app, action, who)
    with _audited(who, action, target="selection", ids=list(ids[:20]), more_ids=max(0, len(ids) - 20)) as counts, \
            connection(app) as conn:
        counts[0] = len(ids)
        for start in range(0, len(ids), BATCH):
            counts[1] += apply(conn, ids[start:start + BATCH])
    return ActionResult(action, counts[0], counts[1])


def count_matching(app: App, f: JobFilter) -> int:
    with connection(app) as conn:
        return app.store.dashboard_job_match_count(conn, f.query)


def run_on_filter(app: App, action: JobAction, f: JobFilter, *, who: str) -> ActionResult:
    """Apply `action` to every job the filter matches now, batch by batch."""
    apply = _apply(app, action, who)
    before: int | None = None
    with _audited(who, action, target="filter", filter=f.url_query(cursor=False)) as counts, connection(app) as conn:
        while True:
            ids = app.store.dashboard_job_match_ids(conn, f.query, before=before, limit=BATCH)
            if not ids:
                break
            counts[0] += len(ids)
            counts[1] += apply(conn, ids)
            before = min(ids)
    return ActionResult(action, counts[0], counts[1])


def set_paused(app: App, queue: str, paused: bool, *, who: str) -> None:
    validate_queue(queue)
    with connection(app) as conn:
        if paused:
            app.store.queue_pause(conn, queue)
        else:
            app.store.queue_resume(conn, queue, channel=jobs_channel(app.schema))
    log_event(logger, logging.INFO, "dashboard.action", who=who, action="pause" if paused else "resume",
              target="queue", queue=queue)


def _whole(field: str, value: str | None) -> int | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(f"{field}={value!r}: expected a whole number, or nothing for no limit") from None


def limit_change(queue: str, concurrency: str | None, rate: str | None, burst: str | None) -> limits.QueueLimitChange:
    """The queues page's limit form, checked: the queue's limits become exactly what it says, an
    empty field meaning no limit of that kind (an empty burst: the rate's default)."""
    return limits.queue_limit_change(queue, _whole("concurrency", concurrency), (rate or "").strip() or None,
                                     _whole("burst", burst), replace=True)


def set_queue_limits(app: App, change: limits.QueueLimitChange, *, who: str) -> limits.QueueLimitsNow:
    """As `pgtasks queues limit` does: written and announced to the workers in one transaction."""
    with connection(app) as conn:
        now = limits.set_queue_limits(app, conn, change)
    log_event(logger, logging.INFO, "dashboard.action", who=who, action="limit", target="queue", queue=change.queue,
              concurrency=now.concurrency, rate=now.rate_text, burst=now.burst)
    return now


def cancel_workflow(app: App, workflow_id: int, *, who: str) -> dict[int, str] | None:
    """Cancel every unfinished step of a workflow, as `pgtasks workflows cancel` does: {job id:
    "cancelled" | "cancel_requested"}, or None when there is no such workflow."""
    with _audited(who, "cancel", target="workflow", workflow=workflow_id) as counts, connection(app) as conn:
        done = app.store.workflow_cancel(conn, workflow_id,
                                         reason=f"workflow {workflow_id} cancelled from the dashboard by {who}",
                                         control=control_channel(app.schema))
        counts[0] = counts[1] = len(done or {})
    return done
