"""Prometheus metrics for a worker (`pgtasks worker --metrics-port N`), using prometheus-client."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pgtasks.core.errors import ConfigurationError, PgtasksError
from pgtasks.core.hooks import Hooks, JobEvent
from pgtasks.core.logs import log_event
from pgtasks.core.models import UNFINISHED_STATES

logger = logging.getLogger("pgtasks.metrics")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# Queue depth and lag are read from the database at scrape time, at most this often, so several
# scrapers (or a fast scrape interval) cost one small query per window.
QUEUE_STATS_TTL = 5.0


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - optional extra, imported only when metrics are on
    except ImportError:
        raise ConfigurationError(
            "--metrics-port needs prometheus-client: pip install 'pgtasks[metrics]'"
        ) from None
    return prometheus_client


@dataclass(frozen=True, slots=True)
class WorkerGauges:
    """The worker's own state at scrape time (Worker.gauges())."""

    running: int
    listening: bool
    leading: bool | None  # None: the worker has no maintenance (not started)
    term: int
    pool_stats: dict[str, int] | None
    pool_max: int
    completer_backlog: int | None


class WorkerMetrics:
    """Owns a private registry, the job counters (fed by an after_job hook) and the HTTP server.

    Exported (all prefixed pgtasks_): jobs_total{task,outcome}, job_duration_seconds{task},
    jobs_running, queue_jobs{queue,state}, queue_lag_seconds{queue}, queue_paused{queue},
    leader / leader_term, listener_connected, pool_connections / pool_connections_idle / pool_requests_waiting,
    completer_backlog, and database_up (0 when the last queue-stats read failed). It reads the
    worker through `gauges` and the database through `queue_stats`, and knows nothing else of it.
    """

    def __init__(self, *, worker_id: str, hooks: Hooks, port: int, gauges: Callable[[], WorkerGauges],
                 queue_stats: Callable[[], list[dict[str, Any]]],
                 addr: str = "0.0.0.0") -> None:  # noqa: S104 - a scrape target
        prom = _prometheus()
        self.worker_id = worker_id
        self.hooks = hooks
        self.port = port
        self.addr = addr
        self.gauges = gauges
        self.queue_stats = queue_stats
        self.registry = prom.CollectorRegistry()
        self.jobs = prom.Counter("pgtasks_jobs", "Job attempts finished by this worker, by task and outcome.",
                                 ["task", "outcome"], registry=self.registry)
        self.duration = prom.Histogram("pgtasks_job_duration_seconds", "Run time of job attempts, by task.",
                                       ["task"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.registry.register(_LiveCollector(self))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def observe(self, event: JobEvent) -> None:
        """The after_job hook: count the outcome and time the attempt (this worker's jobs only)."""
        if event.worker_id != self.worker_id:
            return
        self.jobs.labels(event.task, event.state or "unknown").inc()
        if event.duration is not None:
            self.duration.labels(event.task).observe(event.duration)

    def start(self) -> None:
        prom = _prometheus()
        self._server, self._thread = prom.start_http_server(self.port, addr=self.addr, registry=self.registry)
        self.port = int(self._server.server_port)  # the real one when 0 asked for any free port
        self.hooks.after.append(self.observe)
        log_event(logger, logging.INFO, "metrics.serving", addr=self.addr, port=self.port)

    def stop(self) -> None:
        if self.observe in self.hooks.after:
            self.hooks.after.remove(self.observe)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)


class _LiveCollector:
    """Scrape-time gauges: the worker's own state, and queue depth and lag from the database."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics
        self._cache: tuple[float, list[dict[str, Any]] | None] = (0.0, None)
        self._lock = threading.Lock()

    def describe(self) -> list[Any]:
        return []  # collected lazily; nothing to check at registration

    def _queue_stats(self) -> list[dict[str, Any]] | None:
        with self._lock:
            at, rows = self._cache
            if time.monotonic() - at < QUEUE_STATS_TTL:
                return rows
            try:
                rows = self._metrics.queue_stats()
            except PgtasksError as exc:
                log_event(logger, logging.WARNING, "metrics.queue_stats_failed", error=str(exc))
                rows = None
            self._cache = (time.monotonic(), rows)
            return rows

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - optional extra

        state = self._metrics.gauges()
        yield GaugeMetricFamily("pgtasks_jobs_running", "Jobs this worker is running now.", value=state.running)
        yield GaugeMetricFamily("pgtasks_listener_connected",
                                "1 while the LISTEN connection is up (0 with --no-listen or while reconnecting).",
                                value=1 if state.listening else 0)
        if state.leading is not None:
            yield GaugeMetricFamily("pgtasks_leader", "1 while this worker is the elected leader.",
                                    value=1 if state.leading else 0)
            yield GaugeMetricFamily("pgtasks_leader_term", "The term this worker leads in (0 when not leading).",
                                    value=state.term)
        if state.pool_stats is not None:
            stats = state.pool_stats
            yield GaugeMetricFamily("pgtasks_pool_connections", "Connections the worker's pool holds.",
                                    value=stats.get("pool_size", 0))
            yield GaugeMetricFamily("pgtasks_pool_connections_idle", "Idle connections in the worker's pool.",
                                    value=stats.get("pool_available", 0))
            yield GaugeMetricFamily("pgtasks_pool_requests_waiting", "Requests waiting for a pool connection.",
                                    value=stats.get("requests_waiting", 0))
            yield GaugeMetricFamily("pgtasks_pool_max_connections", "The worker pool's max_size.",
                                    value=state.pool_max)
        if state.completer_backlog is not None:
            yield GaugeMetricFamily("pgtasks_completer_backlog", "Outcomes waiting to be written.",
                                    value=state.completer_backlog)
        rows = self._queue_stats()
        yield GaugeMetricFamily("pgtasks_database_up", "1 if the last queue-stats read succeeded.",
                                value=0 if rows is None else 1)
        if rows is None:
            return
        depth = GaugeMetricFamily("pgtasks_queue_jobs", "Unfinished jobs per queue and state.",
                                  labels=["queue", "state"])
        lag = GaugeMetricFamily("pgtasks_queue_lag_seconds",
                                "Age of the oldest job that is due but not claimed, per queue.", labels=["queue"])
        paused = GaugeMetricFamily("pgtasks_queue_paused", "1 if the queue is paused.", labels=["queue"])
        for row in rows:
            for job_state in UNFINISHED_STATES:
                depth.add_metric([row["queue"], str(job_state)], row[job_state])
            lag.add_metric([row["queue"]], row["lag_seconds"])
            paused.add_metric([row["queue"]], 1 if row["paused_at"] is not None else 0)
        yield depth
        yield lag
        yield paused
