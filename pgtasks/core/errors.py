"""The pgtasks exception tree: every error the library raises derives from PgtasksError."""

from __future__ import annotations


class _Public:
    """Classes defined here are documented and raised as `pgtasks.X`: say so in reprs and tracebacks."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:  # not a user's subclass defined elsewhere
            cls.__module__ = "pgtasks"


class PgtasksError(_Public, Exception):
    """Base class of every pgtasks error."""



class ConfigurationError(PgtasksError, ValueError):
    """A setting or an argument has a value pgtasks cannot use; the message names the value and the fix."""



class TaskArgumentError(PgtasksError, TypeError):
    """Arguments given to .delay() do not fit the task's signature or cannot be encoded."""



class DuplicateTaskError(PgtasksError, ValueError):
    """Two tasks were registered under the same name."""



class UnknownTaskError(PgtasksError, LookupError):
    """A job names a task that is not registered in this process."""



class SchemaNotMigratedError(PgtasksError):
    """The pgtasks tables are missing or older than this code: run `pgtasks migrate`."""



class DatabaseError(PgtasksError):
    """A database operation failed; the original psycopg error is the __cause__."""



class ConnectionLostError(DatabaseError):
    """The connection to PostgreSQL (or to the pooler in front of it) was lost or refused; retryable."""



class DatabaseUnreachableError(ConnectionLostError):
    """No connection to PostgreSQL could be opened: refused, timed out (connect_timeout), or the
    server rejected the user, password or database. The message names the target (host, port,
    database, user; never the password) and what to check; the psycopg error is the __cause__."""



class PoolExhaustedError(ConnectionLostError):
    """The pooler had no free server connection in time (PgBouncer 08P01 query_wait_timeout); retryable."""



class JobTimeoutError(PgtasksError, TimeoutError):
    """A task ran past its `timeout`. on_error hooks receive it; the job's error entry records it
    with type "TimeoutError", as before it had a class of its own."""



class StatementPoolingError(ConfigurationError):
    """A transaction block was sent through a statement-mode pooler, which refuses them.

    Not retryable: use a session or transaction pool (or a direct connection) for this DSN.
    """



class BenchmarkError(PgtasksError):
    """A benchmark run could not measure what it set out to (a worker failed, jobs did not complete)."""



class JobControl(_Public, Exception):
    """Base of the exceptions a task raises to steer its own job; not errors."""



class Retry(JobControl):
    """Retry the job, counting the attempt: `raise pgtasks.Retry(in_=30)` (seconds or timedelta)."""


    def __init__(self, in_: float | None = None, reason: str = "") -> None:
        super().__init__(reason or "retry requested by the task")
        self.in_ = in_
        self.reason = reason


class Snooze(JobControl):
    """Run the job again later without counting an attempt: `raise pgtasks.Snooze(30)`."""


    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ConfigurationError(f"Snooze({seconds!r}): seconds must be >= 0")
        super().__init__(f"snoozed for {seconds}s")
        self.seconds = seconds


class Cancel(JobControl):
    """Stop the job for good; it ends `cancelled` and is not retried: `raise pgtasks.Cancel("why")`."""


    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or "cancelled by the task")
        self.reason = reason


# -- results and operations ------------------------------------------------------------------


class JobNotFoundError(PgtasksError, LookupError):
    """No job has this id (it never existed, or retention deleted it)."""



class WaitTimeoutError(PgtasksError, TimeoutError):
    """JobRef.wait() ran out of time before the job reached a final state."""



class JobFailedError(PgtasksError):
    """The job ended without a result: it was discarded or cancelled.

    Carries the job's last error: `error_type` (the task exception's class name, e.g. "ValueError"),
    `error_message` and `traceback` (None when none was recorded).
    """


    def __init__(self, job_id: int, state: str, error_type: str | None, error_message: str | None,
                 traceback: str | None = None) -> None:
        detail = f"{error_type}: {error_message}" if error_type else "no error was recorded"
        super().__init__(f"job {job_id} ended {state}: {detail}")
        self.job_id = job_id
        self.state = state
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback


class JobDiscardedError(JobFailedError):
    """The job failed on its last allowed attempt (or was otherwise discarded)."""



class JobCancelledError(JobFailedError):
    """The job was cancelled: by the task (`raise pgtasks.Cancel`), an operator, or expiry."""



class ResultDecodeError(PgtasksError, ValueError):
    """A stored result does not fit the task's return annotation (did the code change since it ran?)."""

