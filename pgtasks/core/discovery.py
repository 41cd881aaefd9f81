"""Importing the modules that declare an App's tasks: `App(include=[...])` and `app.autodiscover([...])`.

Only imports; what a module declares (Blueprints, `@app.task`) is registered by the App. Every failure
names the module and its cause, with the original exception as __cause__ (its traceback points at
the line that failed).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType

from pgtasks.core.errors import ConfigurationError


def import_tasks_module(name: str, origin: str) -> ModuleType:
    """Import `name`; `origin` says who asked for it ("App(include=...)"), for the error."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise ConfigurationError(f"{origin}: {name!r} is not a module name; expected a dotted path such as "
                                 "'myproject.billing.tasks'")
    try:
        return importlib.import_module(name)
    except Exception as exc:  # any failure of the module's own code, named and chained
        raise ConfigurationError(f"{origin}: cannot import tasks module {name!r}: "
                                 f"{type(exc).__name__}: {exc}") from exc


def related_module(package: str, related_name: str, origin: str) -> str | None:
    """`package.related_name` if that module exists, else None (a package without tasks is skipped,
    as Celery's autodiscover skips it); a package that cannot be imported is an error."""
    if not isinstance(package, str) or not package or package != package.strip():
        raise ConfigurationError(f"{origin}: {package!r} is not a package name; expected a dotted path such as "
                                 "'myproject.billing'")
    parent = import_tasks_module(package, origin)
    if not hasattr(parent, "__path__"):  # a plain module: it has no submodules to look for
        return None
    candidate = f"{package}.{related_name}"
    try:
        found = importlib.util.find_spec(candidate)
    except (ImportError, ValueError) as exc:
        raise ConfigurationError(f"{origin}: cannot look for {candidate!r}: {type(exc).__name__}: {exc}") from exc
    return candidate if found is not None else None


@dataclass(frozen=True, slots=True)
class Include:
    """A module named in App(include=[...])."""

    module: str

    @property
    def origin(self) -> str:
        return "App(include=...)"

    def modules(self) -> list[str]:
        return [self.module]

    def imported(self) -> list[str]:
        """The module if it is imported already (in sys.modules)."""
        return [self.module] if isinstance(self.module, str) and self.module in sys.modules else []


@dataclass(frozen=True, slots=True)
class Autodiscover:
    """app.autodiscover(packages): the `related_name` module of each package that has one. A
    callable is called when the modules are imported (Django's app registry is ready by then)."""

    packages: Iterable[str] | Callable[[], Iterable[str]]
    related_name: str = "tasks"

    @property
    def origin(self) -> str:
        return "app.autodiscover(...)"

    def modules(self) -> list[str]:
        packages = self.packages() if callable(self.packages) else self.packages
        if isinstance(packages, str):
            raise ConfigurationError(f"{self.origin}: packages={packages!r}: expected a list of package names, "
                                     f"e.g. [{packages!r}]")
        found = [related_module(package, self.related_name, self.origin) for package in packages]
        return [name for name in found if name is not None]

    def imported(self) -> list[str]:
        """The modules already imported (in sys.modules); none when `packages` is a callable, which
        may not be ready to be called yet."""
        if callable(self.packages) or isinstance(self.packages, str):
            return []
        names = [f"{package}.{self.related_name}" for package in self.packages if isinstance(package, str)]
        return [name for name in names if name in sys.modules]


def check_related_name(related_name: str) -> str:
    if not isinstance(related_name, str) or not related_name.isidentifier():
        raise ConfigurationError(f"related_name={related_name!r}: expected a module name such as 'tasks'")
    return related_name
