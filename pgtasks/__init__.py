"""pgtasks: Celery-style background tasks on PostgreSQL, enqueued inside your own transaction."""

from pgtasks.app import App
from pgtasks.cleaner import Retention
from pgtasks.context import JobContext, current_job
from pgtasks.errors import (
    Cancel,
    ConfigurationError,
    ConnectionLostError,
    DatabaseError,
    DuplicateTaskError,
    JobCancelledError,
    JobDiscardedError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    PgtasksError,
    PoolExhaustedError,
    ResultDecodeError,
    Retry,
    SchemaNotMigratedError,
    Snooze,
    StatementPoolingError,
    TaskArgumentError,
    UnknownTaskError,
    WaitTimeoutError,
)
from pgtasks.hooks import JobEvent
from pgtasks.models import JobState
from pgtasks.retry import Backoff, Fixed, RetryPolicy
from pgtasks.task import Call, ConfiguredTask, JobRef, Task
from pgtasks.unique import Unique
from pgtasks.worker import Worker

__version__ = "0.1.0.dev0"

__all__ = [
    "App",
    "Backoff",
    "Call",
    "Cancel",
    "ConfigurationError",
    "ConfiguredTask",
    "ConnectionLostError",
    "DatabaseError",
    "DuplicateTaskError",
    "Fixed",
    "JobCancelledError",
    "JobContext",
    "JobDiscardedError",
    "JobEvent",
    "JobFailedError",
    "JobNotFoundError",
    "JobRef",
    "JobState",
    "JobTimeoutError",
    "PgtasksError",
    "PoolExhaustedError",
    "ResultDecodeError",
    "Retention",
    "Retry",
    "RetryPolicy",
    "SchemaNotMigratedError",
    "Snooze",
    "StatementPoolingError",
    "Task",
    "TaskArgumentError",
    "Unique",
    "UnknownTaskError",
    "WaitTimeoutError",
    "Worker",
    "__version__",
    "current_job",
]
