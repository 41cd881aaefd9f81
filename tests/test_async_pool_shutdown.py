"""asyncio.run() must return even if the app's async pool is replacing a broken connection.

psycopg_pool's background tasks catch CancelledError by design, so a pool that is reconnecting
when asyncio.run() cancels every task keeps them alive and the program never exits. The App
closes its per-loop pool when the loop shuts down (pgtasks.connections.close_with_loop).
Without that, this script hung until killed, three times out of three.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

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
