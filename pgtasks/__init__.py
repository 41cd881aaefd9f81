"""pgtasks: Celery-style background tasks on PostgreSQL, enqueued inside your own transaction."""

from pgtasks.app import App
from pgtasks.client.canvas import Signature, chain, chord, group
from pgtasks.client.task import Call, ConfiguredTask, JobRef, Task
from pgtasks.client.workflows import StepResult, WorkflowRef
from pgtasks.core.context import JobContext, JobProgress, current_job
from pgtasks.core.errors import (
    Cancel,
    ConfigurationError,
    ConnectionLostError,
    DatabaseError,
    DatabaseUnreachableError,
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
from pgtasks.core.hooks import JobEvent
from pgtasks.core.limits import Limit
from pgtasks.core.models import JobState
from pgtasks.core.retry import Backoff, Fixed, RetryPolicy
from pgtasks.core.unique import Unique
from pgtasks.leadership.cleaner import Retention
from pgtasks.worker import Worker, WorkerConfig

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
    "DatabaseUnreachableError",
    "DuplicateTaskError",
    "Fixed",
    "JobCancelledError",
    "JobContext",
    "JobDiscardedError",
    "JobEvent",
    "JobFailedError",
    "JobNotFoundError",
    "JobProgress",
    "JobRef",
    "JobState",
    "JobTimeoutError",
    "Limit",
    "PgtasksError",
    "PoolExhaustedError",
    "ResultDecodeError",
    "Retention",
    "Retry",
    "RetryPolicy",
    "SchemaNotMigratedError",
    "Signature",
    "Snooze",
    "StatementPoolingError",
    "StepResult",
    "Task",
    "TaskArgumentError",
    "Unique",
    "UnknownTaskError",
    "WaitTimeoutError",
    "Worker",
    "WorkerConfig",
    "WorkflowRef",
    "__version__",
    "chain",
    "chord",
    "current_job",
    "group",
]
