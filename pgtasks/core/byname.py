"""A task known by its name only: the stand-in definition behind app.send_task() and app.signature()
when the task is defined in another codebase (another service's workers run it)."""

from __future__ import annotations

from typing import Any

from pgtasks.core.arguments import ByNameCodec
from pgtasks.core.definition import TaskConfig, TaskDefinition
from pgtasks.core.errors import UnknownTaskError
from pgtasks.core.options import validate_task_name


def _not_here(*args: Any, **kwargs: Any) -> Any:
    raise UnknownTaskError("a task known by name only has no function in this process; run it on a worker")


class NameOnlyTask(TaskDefinition[..., Any]):
    """A task definition with a name and no function.

    Its defaults are every task's (queue "default", priority 0, max_attempts 20): the sender cannot
    read the real task's, so `queue=` must be given whenever the real task runs in another queue.
    Its arguments are encoded without a signature (see ByNameCodec); the worker checks them. It has
    no unique key and no limit key, since both are computed from the real task's options.
    """

    def __init__(self, name: str) -> None:
        validate_task_name(name)
        super().__init__(_not_here, TaskConfig.create(name))
        self.codec = ByNameCodec(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnknownTaskError(f"{self.name} is known here by name only; it cannot be called in this process")

    def __repr__(self) -> str:
        return f"<Task {self.name} (by name)>"
