"""The pgtasks pytest plugin (entry point `pytest11`): fixtures pgtasks_app, pgtasks_eager, pgtasks_drain."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pgtasks.app import App
    from pgtasks.testing.drain import DrainedJob
    from pgtasks.testing.eager import EagerJobRef


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("pgtasks_app", "Your pgtasks App as module:attribute (default: $PGTASKS_APP)", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pgtasks_eager: run this test with pgtasks eager mode on (.delay() runs inline)")


@pytest.fixture
def pgtasks_app(pytestconfig: pytest.Config) -> App:
    """The App named by the `pgtasks_app` ini option or $PGTASKS_APP; override this fixture to build your own."""
    from pgtasks.cli.base import load_app  # noqa: PLC0415 - only when used

    path = str(pytestconfig.getini("pgtasks_app") or os.environ.get("PGTASKS_APP", ""))
    if not path:
        raise pytest.UsageError(
            "the pgtasks_app fixture needs your App: set `pgtasks_app = myproject.tasks:app` under [pytest] "
            "(or [tool.pytest.ini_options]), set PGTASKS_APP, or define a fixture named pgtasks_app"
        )
    return load_app(path)


@pytest.fixture
def pgtasks_eager(pgtasks_app: App) -> Iterator[list[EagerJobRef]]:
    """Eager mode for this test: .delay() runs inline; yields the refs of the calls made."""
    from pgtasks.testing.eager import eager  # noqa: PLC0415

    with eager(pgtasks_app) as refs:
        yield refs


@pytest.fixture
def pgtasks_drain(pgtasks_app: App) -> Callable[..., list[DrainedJob]]:
    """drain() bound to pgtasks_app: `outcomes = pgtasks_drain()` runs every pending job."""
    from pgtasks.testing.drain import drain  # noqa: PLC0415

    return functools.partial(drain, pgtasks_app)


@pytest.fixture(autouse=True)
def _pgtasks_eager_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked @pytest.mark.pgtasks_eager get eager mode without asking for the fixture."""
    if request.node.get_closest_marker("pgtasks_eager") is None:
        yield
        return
    refs: Any = request.getfixturevalue("pgtasks_eager")
    del refs
    yield
