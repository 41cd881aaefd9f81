"""Task-level unique keys: `@app.task(unique=Unique(args=("user_id",), period=3600))`."""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from pgtasks.core.errors import ConfigurationError

_SORTED = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True, slots=True)
class Unique:
    """How a task derives the unique_key of each job it enqueues.

    The key is the task name, plus a digest of the chosen arguments (`args=True`: all of them,
    defaults filled in; a sequence of parameter names: only those; `False`: none, so at most one
    live job of the task at all), plus, when `period` is given, the start of the current window
    of that many seconds (windows are aligned to the Unix epoch, on the enqueuing client's clock).

    While a job holding the key is available, scheduled, running or retryable, enqueueing again
    returns that job instead of inserting a new one; the database's unique index enforces it, so
    it holds under any concurrency. Finished jobs (completed, cancelled, discarded) release the
    key. An explicit `apply_async(unique_key=...)` overrides the task's default.
    """

    args: bool | Sequence[str] = True
    period: float | timedelta | None = None

    def __post_init__(self) -> None:
        if isinstance(self.args, str):
            raise ConfigurationError(
                f"Unique(args={self.args!r}): pass a sequence of parameter names, e.g. args=({self.args!r},)"
            )
        if self.period is not None:
            seconds = self.period.total_seconds() if isinstance(self.period, timedelta) else self.period
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
                raise ConfigurationError(f"Unique(period={self.period!r}): expected a positive number of seconds "
                                         "or a timedelta")

    @property
    def period_seconds(self) -> float | None:
        if self.period is None:
            return None
        return self.period.total_seconds() if isinstance(self.period, timedelta) else float(self.period)

    def check(self, func: Callable[..., Any], task_name: str) -> None:
        """Fail at registration if `args` names a parameter the function does not have."""
        if isinstance(self.args, bool):
            return
        params = inspect.signature(func).parameters
        unknown = [name for name in self.args if name not in params]
        if unknown:
            raise ConfigurationError(
                f"{task_name}: Unique(args=...) names {unknown}, which are not parameters of the task; "
                f"choose from {list(params)}"
            )

    def key(self, task_name: str, arguments: dict[str, Any], now: float | None = None) -> str:
        """The unique_key for one call; `arguments` maps every parameter name to its value."""
        if self.args is True:
            chosen = arguments
        elif self.args is False:
            chosen = {}
        else:
            chosen = {name: arguments.get(name) for name in self.args}
        digest = hashlib.sha256(_SORTED.encode(chosen)).hexdigest()[:32]
        key = f"{task_name}:{digest}"
        period = self.period_seconds
        if period is not None:
            current = time.time() if now is None else now
            start = math.floor(current / period) * period
            key += "@" + datetime.fromtimestamp(start, UTC).isoformat(timespec="seconds")
        return key


def as_unique(value: Unique | bool | None) -> Unique | None:
    """Normalise @app.task(unique=...): True means Unique() (by all arguments, no window)."""
    if value is None or value is False:
        return None
    if value is True:
        return Unique()
    if isinstance(value, Unique):
        return value
    raise ConfigurationError(f"unique={value!r}: expected True or pgtasks.Unique(args=..., period=...)")
