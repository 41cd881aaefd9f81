"""The worker: claims jobs with SKIP LOCKED, runs them, writes outcomes in batches."""

from pgtasks.worker.config import WorkerConfig
from pgtasks.worker.worker import Worker, WorkerHost

__all__ = ["Worker", "WorkerConfig", "WorkerHost"]
