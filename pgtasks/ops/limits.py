"""Flow control for operators: change a queue's limits while workers run, and describe every limit
with the jobs running against it and those it holds back (`pgtasks queues limit`, `queues list`,
`stats` and the dashboard's queues page).

A change is written and announced in one transaction: the NOTIFY on the control channel reaches
the workers at its commit, when the new values are there to read, and each re-reads which of its
queues are limited before its next claim (and every poll interval without it). The limits
themselves are applied by the claim, so they hold from the next claim of any worker on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgtasks.core.channels import control_channel
from pgtasks.core.errors import ConfigurationError
from pgtasks.core.limits import QueueLimits, Rate
from pgtasks.core.options import validate_queue
from pgtasks.worker.limits import LIMITS_CHANGED

if TYPE_CHECKING:
    from psycopg import Connection

    from pgtasks.app import App

# A count within this fraction of a whole number is shown as that number (100/m is stored as
# 1.6666... per second, and 1.6666... * 60 is not exactly 100 in floating point).
_WHOLE = 1e-9


def natural_rate(per_second: float) -> Rate:
    """A stored rate (tokens per second) in the unit that reads best: the shortest of second,
    minute and hour in which it is a whole number of starts, so 1.666.../s reads "100/m"."""
    for seconds in (1.0, 60.0, 3600.0):
        count = per_second * seconds
        if count >= 1 and abs(count - round(count)) <= _WHOLE * count:
            return Rate(float(round(count)), seconds)
    for seconds in (1.0, 60.0):
        if per_second * seconds >= 1:
            return Rate(round(per_second * seconds, 2), seconds)
    return Rate(round(per_second * 3600, 2), 3600.0)


def rate_text(per_second: float | None, burst: int | None = None) -> str | None:
    """"100/m", or "100/m, burst 10" with a burst; None for no rate."""
    if per_second is None:
        return None
    text = str(natural_rate(float(per_second)))
    return f"{text}, burst {burst}" if burst is not None else text


@dataclass(frozen=True, slots=True)
class QueueLimitChange:
    """A validated change of one queue's limits. Values given are set, the others kept; with
    `replace` the others are removed (the result is exactly what is given); `clear_rate` removes
    the rate and keeps the concurrency unless one is given."""

    queue: str
    limits: QueueLimits
    replace: bool = False
    clear_rate: bool = False

    @property
    def writes(self) -> bool:
        """False when nothing is to change: the command only shows what is in force."""
        return self.replace or self.clear_rate or self.limits.concurrency is not None or self.limits.rate is not None


def queue_limit_change(queue: str, concurrency: int | None, rate: str | None, burst: int | None, *,
                       replace: bool = False, clear_rate: bool = False) -> QueueLimitChange:
    """Check a requested change before anything is written; errors name the value and the fix."""
    validate_queue(queue)
    if clear_rate and (rate is not None or burst is not None):
        raise ConfigurationError(f"--clear-rate with a rate or burst for queue {queue!r}: give --rate (and --burst) "
                                 "to change the rate, or --clear-rate alone to remove it")
    if burst is not None and rate is None:
        raise ConfigurationError(f"burst={burst!r} without a rate for queue {queue!r}: a burst is part of a rate "
                                 f"limit, give the rate with it (e.g. --rate 100/m --burst {burst})")
    if isinstance(concurrency, int) and concurrency < 1:
        raise ConfigurationError(f"concurrency={concurrency!r} for queue {queue!r}: give at least 1 job at once; "
                                 f"to stop the queue, pause it (`pgtasks queues pause {queue}`), and to remove "
                                 "the limit, clear it (--clear)")
    limits = QueueLimits.create(concurrency, rate, burst, setting="rate")
    return QueueLimitChange(queue, limits, replace=replace, clear_rate=clear_rate)


@dataclass(frozen=True, slots=True)
class QueueLimitsNow:
    """A queue's own limits as stored after a change (None: no limit of that kind)."""

    queue: str
    concurrency: int | None
    rate: float | None  # tokens per second
    burst: int | None

    @property
    def rate_text(self) -> str | None:
        return rate_text(self.rate)

    @property
    def short(self) -> str | None:
        """"5 at once · 100/m, burst 1" (the dashboard's column), None without a limit."""
        parts = []
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at once")
        if self.rate is not None:
            parts.append(f"{self.rate_text}, burst {self.burst}")
        return " · ".join(parts) or None

    def describe(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"at most {self.concurrency} running at once")
        if self.rate is not None:
            parts.append(f"at most {self.rate_text} starting (burst {self.burst})")
        return ", ".join(parts) if parts else "no limit of its own"

    def json(self) -> dict[str, Any]:
        return {"queue": self.queue, "concurrency": self.concurrency, "rate": self.rate,
                "rate_text": self.rate_text, "burst": self.burst}


def _now(queue: str, row: Mapping[str, Any] | None) -> QueueLimitsNow:
    if row is None:
        return QueueLimitsNow(queue, None, None, None)
    return QueueLimitsNow(queue, row["concurrency"], row["rate"], row["burst"])


def set_queue_limits(app: App, conn: Connection[Any], change: QueueLimitChange) -> QueueLimitsNow:
    """Write `change` and tell every worker on the control channel, in one transaction."""
    store = app.store
    row: dict[str, Any] | None = None
    with conn.transaction():
        if change.replace:
            row = store.limits_queue_set(conn, change.queue, QueueLimits(), clear=True)
        if change.clear_rate or change.limits.concurrency is not None or change.limits.rate is not None:
            row = store.limits_queue_set(conn, change.queue, change.limits, clear_rate=change.clear_rate)
        store.notify_send(conn, control_channel(app.schema), [LIMITS_CHANGED])
    return _now(change.queue, row)


def queue_limits_now(app: App, conn: Connection[Any], queue: str) -> QueueLimitsNow:
    """What is in force for `queue` now, without changing anything."""
    rows = [r for r in app.store.limits_list(conn) if r["kind"] == "queue" and r["name"] == queue]
    return _now(queue, rows[0] if rows else None)


# -- describing limits: one line per limit, as the CLI's tables and the dashboard show them ----------


@dataclass(frozen=True, slots=True)
class LimitLine:
    """One limit as shown: a queue's own, a task's over all its jobs, or a task's per key. `held`
    is the ready jobs it holds back (limits_list in pgtasks/sql/limits.sql says exactly which)."""

    kind: str  # "queue", "task" or "key"
    name: str  # the queue or task name
    queue: str
    scope: str  # "queue mail", "task send", "task send per customer_id"
    concurrency: str | None  # "5", or "1 per key"
    rate: str | None  # "100/m, burst 10", or "10/s per key, burst 1"
    running: int
    ready: int
    held: int
    keys: str | None = None  # per key: "3 running, 2 holding jobs back"


def limit_lines(rows: Sequence[Mapping[str, Any]]) -> list[LimitLine]:
    """limits_list rows as lines: a task with a limit over all its jobs and one per key gives two."""
    lines: list[LimitLine] = []
    for r in rows:
        running, ready = int(r["running"]), int(r["ready"])
        if r["kind"] == "queue" or r["concurrency"] is not None or r["rate"] is not None:
            lines.append(LimitLine(
                str(r["kind"]), str(r["name"]), str(r["queue"]), f"{r['kind']} {r['name']}",
                None if r["concurrency"] is None else str(r["concurrency"]), rate_text(r["rate"], r["burst"]),
                running, ready, int(r["held"] or 0)))
        if r["kind"] == "task" and (r["key_concurrency"] is not None or r["key_rate"] is not None):
            key_rate = rate_text(r["key_rate"])
            lines.append(LimitLine(
                "key", str(r["name"]), str(r["queue"]), f"task {r['name']} per {r['key_name']}",
                None if r["key_concurrency"] is None else f"{r['key_concurrency']} per key",
                None if key_rate is None else f"{key_rate} per key, burst {r['key_burst']}",
                running, ready, int(r["key_held"] or 0),
                keys=f"{r['keys_running']} running, {r['keys_held']} holding jobs back"))
    return lines


def limit_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A limits_list row for --json: its columns, with the rates also spelled as "100/m"."""
    return {**row, "rate_text": rate_text(row["rate"]), "key_rate_text": rate_text(row["key_rate"])}


def limits_by_queue(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """limits_list rows for --json, grouped by the queue each applies in."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row["queue"]), []).append(limit_json(row))
    return grouped


LIMIT_HEADERS = ("limit", "concurrency", "rate", "running", "ready", "held", "keys")


def limit_cells(line: LimitLine) -> list[Any]:
    """A LimitLine as the CLI's table row (under LIMIT_HEADERS)."""
    return [line.scope, line.concurrency, line.rate, line.running, line.ready, line.held, line.keys]
