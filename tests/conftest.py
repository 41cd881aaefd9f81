"""Shared fixtures: a real PostgreSQL (PGTASKS_TEST_DATABASE_URL, else the embedded default) and a
fresh, migrated schema per test so tests never see each other's jobs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pluggy
import psycopg
import pytest

from pgtasks import App
from tests.requirements import REQUIRE_ALL_ENV, require_all
from tests.tcp_proxy import FreezableProxy, database_proxy

ROOT = Path(__file__).resolve().parent.parent
# The suite's own embedded server, used when PGTASKS_TEST_DATABASE_URL is not set.
TEST_SERVER_DIR = ROOT / ".pgtasks" / "test-postgres"
SERVER_NOTE = pytest.StashKey[str]()  # what the session did with that server, for the summary

# The PgBouncer fixtures (pgbouncer, target, target_app) live in their own module; a private
# PostgreSQL that tests may restart, PgBouncer in front of it, and the faults, in tests/servers.py.
pytest_plugins = ["tests.pgbouncer_fixtures", "tests.servers"]


class SharedTestServer:
    """The suite's embedded server, shared by the test sessions of this checkout that run at once.

    Each session registers its pid while it runs; the last one to finish stops the server. So a run
    leaves nothing running behind it, and never stops a server that another run still uses.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.sessions = data_dir.parent / "test-sessions"  # one empty file per live session, named by pid

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Across processes: registering and starting, or leaving and stopping, is one step."""
        self.sessions.mkdir(parents=True, exist_ok=True)
        with open(self.sessions / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def join(self) -> str:
        from pgtasks.storage.embedded import embedded_dsn

        with self._exclusive():
            (self.sessions / str(os.getpid())).touch()
            return embedded_dsn(self.data_dir)

    def leave(self) -> str:
        """Unregister; stop the server unless another live session uses it. Says which, for the summary."""
        from pgtasks.storage.embedded import stop_embedded

        shown = self.data_dir.relative_to(ROOT)
        with self._exclusive():
            (self.sessions / str(os.getpid())).unlink(missing_ok=True)
            others = self._live_sessions()
            if others:
                return (f"pgtasks: the test suite's embedded PostgreSQL in {shown} keeps running for "
                        f"{len(others)} other test session(s) (pid {', '.join(map(str, others))}); "
                        "the last one to finish stops it")
            stopped = stop_embedded(self.data_dir)
        return (f"pgtasks: stopped the test suite's embedded PostgreSQL in {shown}" if stopped
                else f"pgtasks: the test suite's embedded PostgreSQL in {shown} was not running")

    def _live_sessions(self) -> list[int]:
        """The pids of the other registered sessions; a killed session's entry is dropped."""
        live = []
        for entry in self.sessions.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                os.kill(int(entry.name), 0)
            except ProcessLookupError:
                entry.unlink(missing_ok=True)
                continue
            except PermissionError:  # alive, run by another user
                pass
            live.append(int(entry.name))
        return sorted(live)


@pytest.fixture(scope="session")
def database_url(pytestconfig: pytest.Config) -> Iterator[str]:
    url = os.environ.get("PGTASKS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = SharedTestServer(TEST_SERVER_DIR)
    yield server.join()
    # A session fixture ends after the PgBouncer fixtures that forward to this server.
    pytestconfig.stash[SERVER_NOTE] = server.leave()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    note = terminalreporter.config.stash.get(SERVER_NOTE, None)
    if note is not None:
        terminalreporter.write_line(note)


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"pgt_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def env(database_url: str, schema: str) -> dict[str, str]:
    """The environment for a `pgtasks` subprocess on the test's database and schema."""
    return {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": schema, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def proxied(database_url: str) -> Iterator[tuple[FreezableProxy, str]]:
    """A proxy in front of the test database (tests/tcp_proxy.py), and the DSN through it."""
    with database_proxy(database_url) as pair:
        yield pair


@pytest.fixture
def proxied_app(proxied: tuple[FreezableProxy, str], app: App) -> Iterator[App]:
    """An App on the `app` fixture's schema whose every connection goes through the proxy."""
    application = App(proxied[1], schema=app.schema)
    yield application
    application.close()


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


# -- the dashboard's browser tests (tests/browser.py): one Chromium per session, a context per test ----

# Appended apart from the header's imports; the browser modules are imported only by the fixtures, so a
# session that runs no browser test never loads Playwright.
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, once per test module: the driver and browser take ~0.6 s to start, a context ~0.2 s.

    Not once per session: Playwright's sync API keeps an asyncio loop running on the main thread
    while it is open, and every later test's asyncio.run() would fail."""
    from playwright.sync_api import sync_playwright

    from tests.browser import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A page in its own browser context, so no cookie or storage outlives the test."""
    context = chromium.new_context()
    yield context.new_page()
    context.close()
