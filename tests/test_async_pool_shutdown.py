"""asyncio.run() must return even if the app's async pool is replacing a broken connection.

psycopg_pool's background tasks catch CancelledError by design, so a pool that is reconnecting
when asyncio.run() cancels every task keeps them alive and the program never exits. The App
closes its per-loop pool when the loop shuts down (pgtasks.storage.connections.close_with_loop).
Without that, this script hung until killed, three times out of three.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pgtasks import App
from tests.conftest import ROOT

SCRIPT = textwrap.dedent('''
    import asyncio, sys
    from pgtasks import App

    app = App(sys.argv[1], schema=sys.argv[2])

    @app.task(name="noop")
    def noop() -> None: ...

    async def main() -> None:
        await noop.adelay()
        try:
            async with app.atransaction() as conn:  # its server process dies mid-transaction
                await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        except Exception as exc:
            print("broken:", type(exc).__name__, flush=True)

    asyncio.run(main())  # no aclose(): the loop's shutdown must close the pool
    print("returned", flush=True)
''')


def test_asyncio_run_returns_while_the_pool_replaces_a_broken_connection(
    app: App, database_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), database_url, app.schema], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["broken: AdminShutdown", "returned"], done.stdout


def test_a_pool_closed_by_a_cancel_all_is_replaced_on_the_same_loop(app: App) -> None:
    @app.task(name="noop")
    def noop() -> None: ...

    async def scenario() -> tuple[bool, int]:
        await noop.adelay()
        first = app.database.async_pool_of(asyncio.get_running_loop())
        assert first is not None
        # What a test framework's cleanup may do between tests that share one loop.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        ref = await noop.adelay()  # a new pool, not "the pool is closed"
        replaced = app.database.async_pool_of(asyncio.get_running_loop()) is not first
        await app.aclose()
        return replaced and first.closed, ref.id

    replaced, job_id = asyncio.run(scenario())
    assert replaced and job_id > 0


def test_concurrent_first_enqueues_share_one_pool(app: App, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="noop")
    def noop() -> None: ...

    async def scenario() -> tuple[int, int]:
        refs = await asyncio.gather(*(noop.adelay() for _ in range(5)))  # all open "the" pool at once
        closers = [t for t in asyncio.all_tasks() if t.get_name().endswith("-closer")]
        await app.aclose()
        return len({r.id for r in refs}), len(closers)

    jobs_made, closers = asyncio.run(scenario())
    assert (jobs_made, closers) == (5, 1)
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
