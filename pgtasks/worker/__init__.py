"""The worker: claims jobs with SKIP LOCKED, runs them, writes outcomes in batches."""

from pgtasks.worker.worker import Worker

__all__ = ["Worker"]
