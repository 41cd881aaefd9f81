"""What the dashboard's pages show, read through the App's Store, with the overview cached.

Each function takes the App and returns plain data for a template. The overview's parts are
cached per process for `refresh_interval` seconds (the day chart, whose resolution is a minute,
for 60 s): however many tabs are open, the database computes each once per interval.

The two charts are counted in full once per process, then incrementally: each refresh recounts
only the minutes since the last count (and MARGIN before it, for a job finished then whose
transaction committed later), and keeps the older minutes as they were counted. With a million
jobs a day the full day is ~1 s of the database's time; a refresh is a few milliseconds. A
minute already counted is history: retrying or deleting an old job afterwards does not recount it
(a new process, or one idle for longer than the chart's window, counts everything again).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pgtasks.dashboard.filters import JobFilter
from pgtasks.ops.doctor import OK, DoctorOptions, Finding, run_checks
from pgtasks.ops.limits import LimitLine, QueueLimitsNow, limit_lines

if TYPE_CHECKING:
    from psycopg import Connection

    from pgtasks.app import App

T = TypeVar("T")

HOUR, DAY = 3600, 86400
DAY_CHART_TTL = 60.0
MARGIN = timedelta(minutes=2)  # recounted on every chart refresh before the last count's end
DOCTOR_TTL = 60.0
SILENT_AFTER = 30.0  # seconds without a heartbeat before a worker is no longer shown as live
SEARCH_SCAN = 20_000  # jobs an argument search reads per page at most (the next page goes on)
RECENT_FIRES = 10
# Seconds a page waits for a pooled connection: an unreachable database is an error page in
# seconds, not after the pool's 30 s, and waiting requests do not pile up in the thread pool.
CONNECT_TIMEOUT = 5.0
# How long a failed computation is remembered: requests arriving during an outage fail at once
# instead of each waiting for its own attempt under the key's lock.
FAILURE_TTL = 2.0


def connection(app: App) -> contextlib.AbstractContextManager[Connection[Any]]:
    """A pooled connection for one page's reads (the App's sync pool, which the pages share)."""
    return app.database.pool().connection(timeout=CONNECT_TIMEOUT)


class TimedCache:
    """Values computed at most once per `ttl` per key; callers arriving meanwhile wait for that one."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, Any]] = {}
        self._failures: dict[str, tuple[float, Exception]] = {}
        self._generation = 0
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.computed = 0

    def get(self, key: str, ttl: float, compute: Callable[[], T]) -> T:
        return self.update(key, ttl, lambda _previous: compute())

    def update(self, key: str, ttl: float, compute: Callable[[T | None], T]) -> T:
        """get() for a value computed from the one before: compute(previous) is given the last value
        of `key` however old, even after clear(), or None the first time."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            failed = self._failures.get(key)
            if failed is not None and time.monotonic() - failed[0] < min(ttl, FAILURE_TTL):
                raise failed[1]
            hit = self._values.get(key)
            if hit is not None and time.monotonic() - hit[0] < ttl:
                value: T = hit[1]
                return value
            generation = self._generation
            try:
                value = compute(hit[1] if hit is not None else None)
            except Exception as exc:
                self._failures[key] = (time.monotonic(), exc)
                raise
            self._failures.pop(key, None)
            self.computed += 1
            # A clear() during the computation (an action changed the data) leaves the value
            # expired: it was read before the change.
            self._values[key] = (time.monotonic() if generation == self._generation else -math.inf, value)
            return value

    def clear(self) -> None:
        """Expire every value: the next get() or update() computes it again."""
        with self._guard:
            self._generation += 1
            self._failures.clear()
            for key, (_, value) in list(self._values.items()):
                self._values[key] = (-math.inf, value)


def _series(rows: Iterable[dict[str, Any]], seconds: int, now: datetime) -> dict[str, list[float]]:
    """Per-minute columns for a uPlot chart, with the minutes that had nothing filled with zeros."""
    end = now.replace(second=0, microsecond=0)
    minutes = [end - timedelta(minutes=i) for i in range(seconds // 60, -1, -1)]
    by_minute = {r["minute"].astimezone(UTC): r for r in rows}
    out: dict[str, list[float]] = {"t": [m.timestamp() for m in minutes]}
    for name in ("completed", "retried", "discarded"):
        out[name] = [float(by_minute[m][name]) if m in by_minute else 0.0 for m in minutes]
    return out


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """One chart: the rows of dashboard_throughput by minute, counted up to `until`, and its series."""

    until: datetime
    rows: dict[datetime, dict[str, Any]]
    series: dict[str, list[float]]


def count_minutes(app: App, seconds: int, now: datetime, previous: MinuteCounts | None) -> MinuteCounts:
    """The last `seconds` by minute: counted from the database since MARGIN before `previous` ended,
    the minutes before that taken from `previous` (all of them counted when there is none)."""
    since = now - timedelta(seconds=seconds)
    start, kept = since, {}
    if previous is not None and since < previous.until - MARGIN <= now:
        start = (previous.until - MARGIN).replace(second=0, microsecond=0)
        first = since.replace(second=0, microsecond=0)
        kept = {minute: row for minute, row in previous.rows.items() if first <= minute < start}
    with connection(app) as conn:
        rows = app.store.dashboard_throughput(conn, (now - start).total_seconds(), now=now)
    kept.update({row["minute"].astimezone(UTC): row for row in rows})
    return MinuteCounts(now, kept, _series(kept.values(), seconds, now))


@dataclass(slots=True)
class Overview:
    hour: dict[str, list[float]]
    day: dict[str, list[float]]
    counts: dict[str, int]
    estimated: frozenset[str]
    counts_note: str | None
    durations: list[dict[str, Any]]
    leader: Any
    workers: list[dict[str, Any]]
    totals_hour: dict[str, int] = field(default_factory=dict)


def overview(app: App, cache: TimedCache, refresh_interval: float) -> Overview:
    def chart(seconds: int) -> Callable[[MinuteCounts | None], MinuteCounts]:
        return lambda previous: count_minutes(app, seconds, datetime.now(UTC), previous)

    def live() -> tuple[Any, ...]:
        with connection(app) as conn:
            counts = app.store.dashboard_state_counts(conn)
            durations = app.store.dashboard_durations(conn, HOUR)
            leader = app.store.leader_get(conn)
            workers = app.store.worker_status(conn, silent_after=SILENT_AFTER)
        return counts, durations, leader, workers

    hour = cache.update("chart:hour", refresh_interval, chart(HOUR)).series
    day = cache.update("chart:day", max(refresh_interval, DAY_CHART_TTL), chart(DAY)).series
    counts, durations, leader, workers = cache.get("overview", refresh_interval, live)
    totals = {name: int(sum(hour[name])) for name in ("completed", "retried", "discarded")}
    return Overview(hour=hour, day=day, counts=counts.counts, estimated=counts.estimated,
                    counts_note=counts.note, durations=durations, leader=leader, workers=workers,
                    totals_hour=totals)


def doctor_findings(app: App, cache: TimedCache) -> list[Finding]:
    """The doctor's findings that are not OK (cached: its pool-mode check opens connections)."""
    findings = cache.get("doctor", DOCTOR_TTL, lambda: run_checks(app, DoctorOptions(pool_timeout=3.0)))
    return [f for f in findings if f.status != OK]


@dataclass(slots=True)
class JobPage:
    rows: list[dict[str, Any]]
    next_cursor: int | None
    scanned: int
    searched: bool
    search_exhausted_scan: bool


def job_page(app: App, f: JobFilter) -> JobPage:
    searched = bool(f.query.args_contain or f.query.args_like)
    # Without a search every scanned row matches, so scanning a page is reading a page.
    scan = SEARCH_SCAN if searched else f.limit
    with connection(app) as conn:
        raw = app.store.dashboard_job_page(conn, f.query, before=f.before, limit=f.limit, scan=scan)
    rows = [r for r in raw if r["id"] is not None]
    scanned = int(raw[0]["scanned"]) if raw else 0
    scanned_to = raw[0]["scanned_to"] if raw else None
    if len(rows) == f.limit:
        cursor: int | None = int(rows[-1]["id"])
    elif scanned == scan and scanned_to is not None:
        cursor = int(scanned_to)  # the search read its whole window: older jobs may still match
    else:
        cursor = None
    return JobPage(rows, cursor, scanned, searched, searched and scanned == scan and len(rows) < f.limit)


def filter_choices(app: App) -> dict[str, list[str]]:
    """Queue and task names for the filter menus: the App's tasks plus what unfinished jobs use."""
    with connection(app) as conn:
        queues = set(app.store.dashboard_queue_names(conn))
    queues |= {task.config.queue for task in app.tasks.values()}
    return {"queues": sorted(queues), "tasks": sorted(app.tasks)}


def _pretty(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def job_detail(app: App, job_id: int) -> dict[str, Any] | None:
    with connection(app) as conn:
        job = app.store.job_detail(conn, job_id)
    if job is None:
        return None
    job["args_pretty"] = _pretty(job["args"])
    job["result_pretty"] = _pretty(job["result"])
    job["progress_data"] = json.loads(job["progress"]) if job["progress"] else None
    job["error_list"] = json.loads(job["errors"]) if job["errors"] else []
    return job


@dataclass(frozen=True, slots=True)
class QueuesPage:
    """The queues page: a row per queue (each with `limit`, its own limits as stored, for the
    form), and every limit as a line with its jobs running, ready and held back."""

    rows: list[dict[str, Any]]
    limits: list[LimitLine]


def queues(app: App) -> QueuesPage:
    with connection(app) as conn:
        rows = app.store.queue_stats(conn)
        limits = app.store.limits_list(conn)
    listed = {r["queue"] for r in rows}
    # A queue the App declares but that has nothing waiting is still worth a row (and a pause button).
    idle = [{"queue": q, "available": 0, "scheduled": 0, "running": 0, "retryable": 0, "lag_seconds": 0.0,
             "paused_at": None} for q in sorted({t.config.queue for t in app.tasks.values()} - listed)]
    own = {str(r["name"]): r for r in limits if r["kind"] == "queue"}
    for row in rows + idle:
        limit = own.get(str(row["queue"]))
        row["limit"] = QueueLimitsNow(str(row["queue"]), limit["concurrency"], limit["rate"], limit["burst"]) \
            if limit is not None else QueueLimitsNow(str(row["queue"]), None, None, None)
    return QueuesPage(sorted(rows + idle, key=lambda r: str(r["queue"])), limit_lines(limits))


def workers(app: App) -> list[dict[str, Any]]:
    with connection(app) as conn:
        return app.store.worker_status(conn, silent_after=SILENT_AFTER)


def periodic(app: App) -> dict[str, Any]:
    schedules = sorted(app.schedules.values(), key=lambda s: s.name)
    names = [s.name for s in schedules]
    with connection(app) as conn:
        recorded = app.store.periodic_schedule_names(conn)
        last = app.store.periodic_last_fires(conn, names)
        fires = app.store.dashboard_recent_fires(conn, sorted(set(names) | set(recorded)), RECENT_FIRES)
    now = datetime.now(UTC)
    by_schedule: dict[str, list[dict[str, Any]]] = {}
    for record in fires:
        by_schedule.setdefault(record["schedule"], []).append(record)
    entries = []
    for s in schedules:
        fire = last.get(s.name)
        cursor = fire.last_time if fire is not None else None
        upcoming = s.next_after(cursor if cursor is not None else now)
        entries.append({"name": s.name, "task": s.task.name, "spec": s.spec, "timezone": str(s.timezone),
                        "catch_up": s.catch_up, "overlap": s.overlap, "next_fire": upcoming, "due": upcoming <= now,
                        "fires": by_schedule.get(s.name, [])})
    undefined = [{"name": n, "fires": by_schedule.get(n, [])} for n in sorted(set(recorded) - set(names))]
    return {"schedules": entries, "undefined": undefined, "defined_in_app": bool(app.tasks)}
