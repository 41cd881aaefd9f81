"""The registry of one App: its task definitions, periodic schedules and job hooks. No I/O."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, timedelta, tzinfo
from pathlib import Path
from typing import Any, Generic, TypeVar

from pgtasks.core.crontab import Crontab
from pgtasks.core.definition import TaskDefinition
from pgtasks.core.errors import ConfigurationError, DuplicateTaskError
from pgtasks.core.hooks import Hooks
from pgtasks.core.limits import QueueLimits
from pgtasks.core.options import validate_queue
from pgtasks.core.schedules import PeriodicSchedule, make_schedule

D = TypeVar("D", bound="TaskDefinition[Any, Any]")
T = TypeVar("T", bound="TaskDefinition[Any, Any]")


def default_task_name(func: Callable[..., Any]) -> str:
    """The name a task is registered under unless name= is given: `module.qualname`."""
    module = func.__module__
    if module == "__main__":
        # A script run directly: name tasks after the module a worker would import it as.
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        elif getattr(main, "__file__", None):
            module = Path(main.__file__ or "main").stem
    return f"{module}.{func.__qualname__}"


def _where(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


class Registry(Generic[D]):
    """What the worker, the scheduler and results read; what `@app.task` / `@app.periodic` write.

    The parts that run jobs take a Registry rather than the App, so they depend on what is
    registered and nothing else.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, D] = {}
        self.schedules: dict[str, PeriodicSchedule] = {}
        self.hooks = Hooks()
        self.queue_limits: dict[str, QueueLimits] = {}  # app.queue(name, concurrency=, rate_limit=)
        self.timezone: tzinfo = UTC  # the zone of cron schedules that name none: App(timezone=...)

    def add_task(self, task: D) -> None:
        known = self.tasks.get(task.name)
        if known is not None:
            raise DuplicateTaskError(
                f"a task named {task.name!r} is already registered (function {_where(known.func)}; this one is "
                f"{_where(task.func)}); pass a distinct name=... to @app.task / @bp.task"
            )
        self.tasks[task.name] = task

    def declare_queue(self, name: str, limits: QueueLimits) -> None:
        validate_queue(name)
        known = self.queue_limits.get(name)
        if known is not None and known != limits:
            raise ConfigurationError(f"queue {name!r} is already declared with {known}; declare each queue once")
        self.queue_limits[name] = limits

    def owns(self, task: TaskDefinition[Any, Any]) -> bool:
        """True if `task` was registered here (and not in another App of the same process)."""
        return self.tasks.get(task.name) is task

    def add_schedule(self, schedule: PeriodicSchedule) -> None:
        if schedule.name in self.schedules:
            raise ConfigurationError(
                f"a periodic schedule named {schedule.name!r} already exists; pass name='...' to tell "
                "two schedules of the same task apart"
            )
        self.schedules[schedule.name] = schedule

    def periodic(
        self, *, cron: str | Crontab | None, every: timedelta | float | None, args: Sequence[Any],
        kwargs: Mapping[str, Any] | None, timezone: str | tzinfo | None, catch_up: str, catch_up_limit: int,
        name: str | None, overlap: bool, queue: str | None = None, priority: int | None = None,
        expires: float | timedelta | None = None,
    ) -> Callable[[T], T]:
        """The decorator `@app.periodic(...)` returns: registers the schedule, returns the task unchanged."""

        def register(task: T) -> T:
            schedule = make_schedule(task, cron=cron, every=every, args=args, kwargs=kwargs, timezone=timezone,
                                     catch_up=catch_up, catch_up_limit=catch_up_limit, name=name, overlap=overlap,
                                     queue=queue, priority=priority, expires=expires,
                                     default_timezone=self.timezone)
            if not self.owns(task):
                raise ConfigurationError(f"{task.name} belongs to another App; use that App's periodic()")
            self.add_schedule(schedule)
            return task

        return register
