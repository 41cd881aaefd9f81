"""A task's exception across the database: what an error entry records of it, and the exception a
wait raises for it, which is also of the task's own exception type where this process can import it.

So `except ValueError:` around `ref.wait()` catches a job whose task raised ValueError, and
`except pgtasks.JobFailedError:` still catches every failed job. The typed error is an instance of
a subclass of both, built once per pair of classes: `JobDiscardedError[ValueError]`.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Mapping
from typing import Any

from pgtasks.core.errors import (
    JobCancelledError,
    JobControl,
    JobDiscardedError,
    JobFailedError,
    JobTimeoutError,
    PgtasksError,
    SoftTimeLimitExceeded,
)

FailureArgs = tuple[int, str, str | None, str | None, str | None, str | None]


def recorded_type(exc: BaseException) -> tuple[str, str]:
    """(type, module) an error entry records for `exc`: the class's qualified name and its module,
    which together find the class again. pgtasks' own timeout is recorded as the builtin
    TimeoutError it is (the entry's type was "TimeoutError" before modules were recorded)."""
    if isinstance(exc, JobTimeoutError):
        return "TimeoutError", "builtins"
    cls = type(exc)
    return cls.__qualname__, cls.__module__


def exception_class(module: str | None, qualname: str | None) -> type[Exception] | None:
    """The Exception subclass an error entry names, or None when it names none that can be used here.

    None for entries without a module (pgtasks' own: Cancelled, Expired, Rescued; and entries
    written before modules were recorded), for a class this process cannot find, for anything
    that is not an Exception subclass (a KeyboardInterrupt must not come out of a wait), for
    pgtasks' job control exceptions (a Cancel raised from a wait inside a task would cancel that
    task) and for pgtasks' own errors but SoftTimeLimitExceeded (JobFailedError's family included:
    a WaitTimeoutError of the task's own wait must not pass for the caller's). No module is imported: the
    class is looked up only in modules this process has imported already (an error entry is data
    from the database, and an import runs code).
    """
    if not module or not qualname:
        return None
    # Only a module this process has imported already: the module is data from the database, and
    # an import runs code. Code that catches the type (`except CardDeclined:`) has imported it.
    found = sys.modules.get(module)
    if found is None:
        return None
    target: Any = found
    for part in qualname.split("."):  # a nested class; "<locals>" of a function is not reachable
        target = getattr(target, part, None)
        if target is None:
            return None
    if not isinstance(target, type) or not issubclass(target, Exception) or issubclass(target, JobControl):
        return None
    if issubclass(target, PgtasksError) and not issubclass(target, SoftTimeLimitExceeded):
        # pgtasks' own errors describe the call they come from: a WaitTimeoutError of the task's own
        # wait, re-raised typed, would pass for the caller's wait timing out (and a JobNotFoundError,
        # ConnectionLostError, ... for the caller's). The soft time limit is the task's outcome.
        return None
    return target


_typed: dict[tuple[type[JobFailedError], type[Exception]], type[JobFailedError] | None] = {}
# Reentrant: building a class runs the task's class's __init_subclass__, which may itself wait for a job.
_typed_lock = threading.RLock()


def typed_class(base: type[JobFailedError], original: type[Exception]) -> type[JobFailedError] | None:
    """The subclass of `base` and `original` (one class per pair, so `type(a) is type(b)` holds for two
    failures of one type), or None when Python cannot combine them (instance layouts that conflict,
    a class that refuses subclasses or whose __init_subclass__ raises)."""
    if issubclass(base, original):  # a bare Exception: every JobFailedError is one already
        return base
    key = (base, original)
    with _typed_lock:
        if key not in _typed:
            _typed[key] = _build(base, original)
        return _typed[key]


def _build(base: type[JobFailedError], original: type[Exception]) -> type[JobFailedError] | None:
    # No dot in the name: an exception's repr shows only what follows the last one. The message
    # names the task's class with its module.
    name = f"{base.__name__}[{original.__name__}]"

    def body(namespace: dict[str, Any]) -> None:
        namespace.update({"__module__": "pgtasks", "__qualname__": name, "__reduce__": _reduce_typed,
                          "error_class": original})

    try:
        built = types.new_class(name, (base, original), exec_body=body)
    except Exception:  # noqa: BLE001 - the classes do not combine: the plain error, which names the type
        return None
    return built if issubclass(built, JobFailedError) else None


def _args(error: JobFailedError) -> FailureArgs:
    return (error.job_id, error.state, error.error_type, error.error_message, error.traceback, error.error_module)


def _reduce_typed(self: JobFailedError) -> tuple[Any, ...]:
    # The built class cannot be found by name: pickle the pair it was built from instead.
    return rebuild, (type(self).__bases__[0], self.error_class, *_args(self))


def rebuild(base: type[JobFailedError], original: type[Exception] | None, *args: Any) -> JobFailedError:
    """A failure of `base` (and `original`, when it combines) from JobFailedError's arguments: what
    unpickling a typed failure calls."""
    typed = typed_class(base, original) if original is not None else None
    if typed is None:
        return base(*args)
    try:
        return typed(*args)
    except Exception:  # noqa: BLE001 - its constructor refuses a message alone: the plain error
        return base(*args)


def failure_error(job_id: int, state: str, entry: Mapping[str, Any] | None) -> JobFailedError:
    """The exception for a job that ended `state` without a result, `entry` being its last error
    entry ({"type", "module", "message", "traceback", ...}; None or {} when none was recorded).

    JobCancelledError for a cancelled job, JobDiscardedError otherwise; an instance of the task's
    exception class too when exception_class() finds it and the class can be built from a message
    alone (its __init__ runs with the pgtasks message). Otherwise the plain error, whose message
    names the type with its module.
    """
    entry = entry if isinstance(entry, Mapping) else {}
    base: type[JobFailedError] = JobCancelledError if state == "cancelled" else JobDiscardedError
    error_type, module = _text(entry.get("type")), _text(entry.get("module"))
    args: FailureArgs = (job_id, state, error_type, _text(entry.get("message")), _text(entry.get("traceback")),
                         module)
    return rebuild(base, exception_class(module, error_type), *args)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
