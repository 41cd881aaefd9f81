"""Blueprints: tasks declared in a module that does not import the App (a library, a Django app), bound
to an App when it adds the blueprint (`app.add_blueprint(bp)`, or by importing the module through
`App(include=[...])` / `app.autodiscover([...])`).

Each App that adds a blueprint registers Task objects of its own, from the same functions and
options, so every App's registry holds only its own tasks. The object `@bp.task` returns enqueues
through the App that added its blueprint last.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, Protocol, TypedDict, TypeVar, Unpack, overload

from pgtasks.client.task import ConfiguredTask, JobOptions, Task, TaskHost, _EnqueueApi
from pgtasks.core.definition import TaskConfig, TaskDefinition
from pgtasks.core.errors import ConfigurationError
from pgtasks.core.hooks import Hook
from pgtasks.core.limits import Limit, Rate
from pgtasks.core.options import EnqueueOptions
from pgtasks.core.registry import default_task_name
from pgtasks.core.retry import RetryPolicy
from pgtasks.core.unique import Unique

__all__ = ["Blueprint", "BlueprintTask", "TaskOptions", "register_loader"]

P = ParamSpec("P")
R = TypeVar("R")

_ExceptionTypes = type[Exception] | tuple[type[Exception], ...] | list[type[Exception]]


class TaskOptions(TypedDict, total=False):
    """The options of `@bp.task(...)`: the same as `@app.task(...)`'s, with the same meaning
    (docs/tasks.md). tests/test_discovery.py checks that they match TaskConfig.create()."""

    queue: str
    priority: int
    max_attempts: int
    retry: RetryPolicy | None
    timeout: float | None
    store_result: bool
    unique: Unique | bool | None
    concurrency: int | Limit | None
    rate_limit: str | Rate | Limit | None
    retry_on: _ExceptionTypes | None
    dont_retry_on: _ExceptionTypes | None
    soft_timeout: float | None
    on_success: Hook | None
    on_failure: Hook | None
    on_retry: Hook | None


class TaskLoader(Protocol):
    """An App whose include= / autodiscover() modules are not imported yet."""

    def load_tasks(self) -> list[str]: ...


# Apps with modules still to import, so a blueprint's task used before any App added it can ask
# them to import theirs (a web process imports the App and the tasks modules, and need not call
# load_tasks() itself). Weak: an App that is gone is not kept alive for this.
_LOADERS: weakref.WeakSet[TaskLoader] = weakref.WeakSet()


def register_loader(loader: TaskLoader, pending: bool) -> None:
    """Called by an App: whether it has modules left to import."""
    if pending:
        _LOADERS.add(loader)
    else:
        _LOADERS.discard(loader)


Register = Callable[[Callable[..., Any], TaskConfig], Task[Any, Any]]


class Blueprint:
    """Tasks declared without an App: `bp = pgtasks.Blueprint()`, then `@bp.task` as `@app.task`.

    An App adds it with `app.add_blueprint(bp)`, or when it imports the module holding it
    (`App(include=["pkg.tasks"])`, `app.autodiscover(["pkg"])`). Once added, its tasks enqueue
    through that App (`.delay()`, `.s()`, ...) and its workers run them. A blueprint added to several
    Apps enqueues through the one that added it last; each App keeps its own tasks in `app.tasks`.
    """

    def __init__(self) -> None:
        self._declared: dict[str, BlueprintTask[Any, Any]] = {}
        # The App that added this blueprint last: how it registers a task, and its Task of each name.
        self._register: Register | None = None
        self._bound: dict[str, Task[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"<Blueprint tasks={sorted(self._declared)}>"

    @property
    def tasks(self) -> Mapping[str, BlueprintTask[Any, Any]]:
        """The tasks declared on this blueprint, by name."""
        return self._declared

    @overload
    def task(self, func: Callable[P, R], /) -> BlueprintTask[P, R]: ...

    @overload
    def task(self, *, name: str | None = None,
             **options: Unpack[TaskOptions]) -> Callable[[Callable[P, R]], BlueprintTask[P, R]]: ...

    def task(  # type: ignore[misc] # mypy cannot match ParamSpec-bound overloads to one implementation
        self, func: Callable[P, R] | None = None, /, *, name: str | None = None, **options: Unpack[TaskOptions],
    ) -> BlueprintTask[P, R] | Callable[[Callable[P, R]], BlueprintTask[P, R]]:
        """Declare a task: `@bp.task` or `@bp.task(queue="mail", timeout=30)`, with @app.task's options.

        Named `module.function` unless `name=` is given, as with @app.task.
        """
        config = TaskConfig.create("", **options)  # validated now, at decoration, as @app.task does

        def declare(fn: Callable[P, R]) -> BlueprintTask[P, R]:
            if isinstance(fn, TaskDefinition):
                raise ConfigurationError(f"{fn.name} is already a task; apply @bp.task once")
            named = dataclasses.replace(config, name=name or default_task_name(fn))
            if named.name in self._declared:
                raise ConfigurationError(f"this blueprint already declares a task named {named.name!r}; "
                                         "pass a distinct name=... to @bp.task")
            declared: BlueprintTask[P, R] = BlueprintTask(self, fn, named)
            self._declared[named.name] = declared
            if self._register is not None:  # declared after an App added the blueprint: add it there too
                self._bound[named.name] = self._register(fn, named)
            return declared

        return declare(func) if func is not None else declare

    def add_to(self, registered: Mapping[str, Task[Any, Any]], register: Register) -> None:
        """Make the App whose tasks are `registered` the one this blueprint's tasks enqueue through.
        Each task it has not registered yet is registered through `register` (which makes the App's
        own Task, and raises DuplicateTaskError for a name taken by another function). Called by
        App.add_blueprint()."""
        bound: dict[str, Task[Any, Any]] = {}
        for name, declared in self._declared.items():
            known = registered.get(name)
            bound[name] = known if known is not None and known.func is declared.func else register(
                declared.func, declared.config)
        self._register, self._bound = register, bound

    def _bound_task(self, name: str) -> Task[Any, Any]:
        if self._register is None:  # no App added it yet: one with modules left to import may
            for loader in list(_LOADERS):
                loader.load_tasks()
        task = self._bound.get(name)
        if task is None:
            raise ConfigurationError(
                f"{name} is declared on a Blueprint that no App has added yet, so it has no App to enqueue "
                "through: list its module in App(include=[...]) or app.autodiscover([...]), or call "
                "app.add_blueprint(...) (a blueprint's tasks cannot be used while their own module is "
                "still being imported)")
        return task


class BlueprintTask(TaskDefinition[P, R], _EnqueueApi[P]):
    """A task declared on a Blueprint. Calling it runs the function inline; `.delay()`, `.s()`,
    `.configure()` and the rest work as a Task's, through the App that added the blueprint."""

    def __init__(self, blueprint: Blueprint, func: Callable[P, R], config: TaskConfig) -> None:
        super().__init__(func, config)
        self.blueprint = blueprint
        self._options = EnqueueOptions()

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.config.queue!r} (blueprint)>"

    @property
    def _task(self) -> Task[Any, Any]:
        return self.blueprint._bound_task(self.name)

    @property
    def app(self) -> TaskHost:
        """The App this task enqueues through (the one that added its blueprint last)."""
        return self._task.app

    def configure(self, **options: Unpack[JobOptions]) -> ConfiguredTask[P]:
        """Fix some enqueue options, as Task.configure(); the App is looked up when it enqueues."""
        return ConfiguredTask(self, EnqueueOptions(**options))
