"""The registry of one App: its task definitions, periodic schedules and job hooks. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta, tzinfo
from typing import Any, Generic, TypeVar

from pgtasks.core.definition import TaskDefinition
from pgtasks.core.errors import ConfigurationError, DuplicateTaskError
from pgtasks.core.hooks import Hooks
from pgtasks.core.limits import QueueLimits
from pgtasks.core.options import validate_queue
from pgtasks.core.schedules import PeriodicSchedule, make_schedule

D = TypeVar("D", bound="TaskDefinition[Any, Any]")
T = TypeVar("T", bound="TaskDefinition[Any, Any]")


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

    def add_task(self, task: D) -> None:
        if task.name in self.tasks:
            raise DuplicateTaskError(
                f"a task named {task.name!r} is already registered; pass a distinct name=... to @app.task"
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
        self, *, cron: str | None, every: timedelta | float | None, args: Sequence[Any],
        kwargs: Mapping[str, Any] | None, timezone: str | tzinfo | None, catch_up: str, catch_up_limit: int,
        name: str | None, overlap: bool,
    ) -> Callable[[T], T]:
        """The decorator `@app.periodic(...)` returns: registers the schedule, returns the task unchanged."""

        def register(task: T) -> T:
            schedule = make_schedule(task, cron=cron, every=every, args=args, kwargs=kwargs, timezone=timezone,
                                     catch_up=catch_up, catch_up_limit=catch_up_limit, name=name, overlap=overlap)
            if not self.owns(task):
                raise ConfigurationError(f"{task.name} belongs to another App; use that App's periodic()")
            self.add_schedule(schedule)
            return task

        return register
