"""Shared fixtures: a real PostgreSQL (PGTASKS_TEST_DATABASE_URL, else the embedded default) and a
fresh, migrated schema per test so tests never see each other's jobs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pluggy
import psycopg
import pytest

from pgtasks import App
from tests.requirements import REQUIRE_ALL_ENV, require_all

ROOT = Path(__file__).resolve().parent.parent

# The PgBouncer fixtures (pgbouncer, target, target_app) live in their own module; a private
# PostgreSQL that tests may restart, PgBouncer in front of it, and the faults, in tests/servers.py.
pytest_plugins = ["tests.pgbouncer_fixtures", "tests.servers"]


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("PGTASKS_TEST_DATABASE_URL")
    if url:
        return url
    from pgtasks.storage.embedded import embedded_dsn

    return embedded_dsn(ROOT / ".pgtasks" / "test-postgres")


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"pgt_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def app(database_url: str, schema: str) -> Iterator[App]:
    application = App(database_url, schema=schema)
    application.migrate()
    yield application
    application.close()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection for assertions."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


# -- PGTASKS_REQUIRE_ALL=1 (CI): no test passes as skipped ---------------------------------------------


def _skip_reason(longrepr: object) -> str:
    """The reason of a skipped report (pytest stores a (path, line, reason) tuple)."""
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _fail_skipped(report: pytest.TestReport | pytest.CollectReport, where: str) -> None:
    report.outcome = "failed"
    report.longrepr = (f"skipped {where}, but {REQUIRE_ALL_ENV}=1 requires everything to run: "
                       f"{_skip_reason(report.longrepr)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """A skip from a mark, a fixture, importorskip or pytest.skip() fails the test under the switch.

    An expected failure (xfail) also reports as skipped; it is not a missing requirement, so it stays.
    """
    outcome = yield
    report = outcome.get_result()
    if require_all() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skipped(report, f"in {report.when}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pluggy.Result[pytest.CollectReport], None]:
    """A module that skips itself at import (pytest.importorskip at the top) fails collection instead."""
    outcome = yield
    report = outcome.get_result()
    if require_all() and report.skipped:
        _fail_skipped(report, "at collection")
