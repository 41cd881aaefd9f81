"""The registry of one App: its task definitions, periodic schedules and job hooks. No I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pgtasks.core.definition import TaskDefinition
from pgtasks.core.errors import ConfigurationError, DuplicateTaskError
from pgtasks.core.hooks import Hooks

if TYPE_CHECKING:
    from pgtasks.core.schedules import PeriodicSchedule

D = TypeVar("D", bound="TaskDefinition[Any, Any]")


class Registry(Generic[D]):
    """What the worker, the scheduler and results read; what `@app.task` / `@app.periodic` write.

    The parts that run jobs take a Registry rather than the App, so they depend on what is
    registered and nothing else.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, D] = {}
        self.schedules: dict[str, PeriodicSchedule] = {}
        self.hooks = Hooks()

    def add_task(self, task: D) -> None:
        if task.name in self.tasks:
            raise DuplicateTaskError(
                f"a task named {task.name!r} is already registered; pass a distinct name=... to @app.task"
            )
        self.tasks[task.name] = task

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
