"""The pgtasks exception tree: every error the library raises derives from PgtasksError."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Self


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



class SoftTimeLimitExceeded(PgtasksError, TimeoutError):
    """Raised inside an async task at its `soft_timeout`, at the await it is suspended in, so it can
    clean up before the hard `timeout`. A sync task cannot be interrupted: it sees
    `current_job().soft_timed_out` turn True instead. Caught, the task goes on (and may still
    return normally); uncaught, it fails the attempt like any exception (a TimeoutError, so
    `retry_on=(TimeoutError,)` covers it)."""



class StatementPoolingError(ConfigurationError):
    """A transaction block was sent through a statement-mode pooler, which refuses them.

    Not retryable: use a session or transaction pool (or a direct connection) for this DSN.
    """



class BenchmarkError(PgtasksError):
    """A benchmark run could not measure what it set out to (a worker failed, jobs did not complete)."""



class JobControl(_Public, Exception):
    """Base of the exceptions a task raises to steer its own job; not errors."""



class Retry(JobControl):
    """Retry the job, counting the attempt: `raise pgtasks.Retry(in_=30)` (seconds or timedelta).

    `in_=None` waits as the task's retry policy says. The attempt's error entry records the
    exception the retry is for, with its type, message and traceback: `exc=`, else the one it was
    raised from (`raise Retry() from err`), else the one being handled when it was raised (inside
    `except`); only with none of them (or `from None`) is it recorded as "Retry". The task's
    `retry_on` / `dont_retry_on` do not apply: the task asked for this retry. When the attempts are
    used up the job is discarded instead, with the same error.
    """


    def __init__(self, in_: float | timedelta | None = None, reason: str = "", *,
                 exc: BaseException | None = None) -> None:
        seconds = in_.total_seconds() if isinstance(in_, timedelta) else in_
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                                    or not seconds >= 0):  # `not >=` also refuses NaN
            raise ConfigurationError(f"Retry(in_={in_!r}): expected seconds >= 0 (a number or a timedelta), "
                                     "or None for the task's retry policy")
        if exc is not None and not isinstance(exc, BaseException):
            raise ConfigurationError(f"Retry(exc={exc!r}): expected the exception instance to record")
        super().__init__(reason or (f"retry requested by the task: {type(exc).__qualname__}: {exc}" if exc is not None
                                    else "retry requested by the task"))
        self.in_: float | None = None if seconds is None else float(seconds)
        self.reason = reason
        self.exc = exc

    @property
    def error(self) -> BaseException | None:
        """The exception this retry is for (see the class docstring), or None."""
        if self.exc is not None:
            return self.exc
        if self.__cause__ is not None:
            return self.__cause__
        return None if self.__suppress_context__ else self.__context__


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



def _failure_message(job_id: int, state: str, error_type: str | None, error_message: str | None,
                     error_module: str | None) -> str:
    if not error_type:
        return f"job {job_id} ended {state}: no error was recorded"
    named = error_type if error_module in (None, "builtins") else f"{error_module}.{error_type}"
    return f"job {job_id} ended {state}: {named}: {error_message}"


class JobFailedError(PgtasksError):
    """The job ended without a result: it was discarded or cancelled.

    Carries the job's last error: `error_type` (the task exception's class name, e.g. "ValueError"),
    `error_module` (its module, e.g. "billing.errors"; None for errors pgtasks itself recorded, such as
    an operator's cancel, and for errors recorded before pgtasks 0.1 recorded modules), `error_message`
    and `traceback` (None when none was recorded). `error_class` is the task's exception class when
    this error is also an instance of it (see JobRef.wait()), else None.
    """

    error_class: type[Exception] | None = None

    def __new__(cls, job_id: int, state: str, error_type: str | None, error_message: str | None,
                traceback: str | None = None, error_module: str | None = None) -> Self:
        # The next base's __new__ gets the message alone: in a failure that is also of the task's
        # own exception type (pgtasks.core.failures), that base is the task's class, and OSError's
        # __new__, say, would take the job's fields for its errno and filename.
        return super().__new__(cls, _failure_message(job_id, state, error_type, error_message, error_module))

    def __init__(self, job_id: int, state: str, error_type: str | None, error_message: str | None,
                 traceback: str | None = None, error_module: str | None = None) -> None:
        super().__init__(_failure_message(job_id, state, error_type, error_message, error_module))
        self.job_id = job_id
        self.state = state
        self.error_type = error_type
        self.error_module = error_module
        self.error_message = error_message
        self.traceback = traceback

    def __str__(self) -> str:
        # Ours, not the next base's: KeyError's would quote the message, OSError's prefix an errno.
        return _failure_message(self.job_id, self.state, self.error_type, self.error_message, self.error_module)

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException's would call the class with the message alone (it takes the job's fields).
        return type(self), (self.job_id, self.state, self.error_type, self.error_message, self.traceback,
                            self.error_module)


class JobDiscardedError(JobFailedError):
    """The job failed on its last allowed attempt (or was otherwise discarded)."""



class JobCancelledError(JobFailedError):
    """The job was cancelled: by the task (`raise pgtasks.Cancel`), an operator, or expiry."""



class JobStateError(PgtasksError):
    """What was asked does not fit the job's state now: JobRef.forget() of a job that has not
    finished, or of a step whose workflow may still read its result. The message says which."""



class ResultDecodeError(PgtasksError, ValueError):
    """A stored result does not fit the task's return annotation (did the code change since it ran?)."""

