"""The worker's operations add-ons, kept apart from the fetch loop: operator cancels and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgtasks.worker.cancel import CancelRegistry, CancelWatcher

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from pgtasks.worker.metrics import WorkerMetrics
    from pgtasks.worker.worker import Worker


class WorkerOps:
    """Started after the worker's pool opens, stopped before it closes."""

    def __init__(self, worker: Worker, metrics_port: int | None = None) -> None:
        self.worker = worker
        self.metrics_port = metrics_port
        self.cancels = CancelRegistry()
        self.watcher: CancelWatcher | None = None
        self.metrics: WorkerMetrics | None = None

    async def start(self, pool: AsyncConnectionPool[Any]) -> None:
        self.watcher = CancelWatcher(pool, self.worker.app.store, self.cancels, self.worker.poll_interval)
        await self.watcher.start()
        if self.metrics_port is not None:
            from pgtasks.worker.metrics import WorkerMetrics  # noqa: PLC0415 - prometheus-client is optional

            metrics = WorkerMetrics(self.worker, self.metrics_port)
            metrics.start()
            self.metrics = metrics  # published once serving, with the real port

    def on_control(self, payload: str) -> None:
        """A notification on the control channel (see pgtasks.core.channels)."""
        if self.watcher is not None:
            self.watcher.on_control(payload)

    async def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None
