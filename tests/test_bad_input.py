"""Bad input through a real database and a running worker, direct and through both pools: each
call raises a pgtasks error naming the parameter (or the name), inserts nothing, leaves an open
transaction usable (the database was never reached), and the worker goes on running jobs.

The codec and the validators alone: tests/test_unit_bad_input.py. Random values: test_argument_roundtrip.py.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from pgtasks import App, ConfigurationError, PgtasksError, Task, TaskArgumentError
from tests.conftest import ROOT
from tests.helpers import jobs, worker_thread


def self_containing() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


Enqueue = Callable[[Task[..., Any]], object]

# (what is wrong, the call, the error class, what its message must say)
BAD_ENQUEUES: list[tuple[str, Enqueue, type[PgtasksError], str]] = [
    ("list containing itself", lambda t: t.delay(payload=self_containing()), TaskArgumentError,
     "argument 'payload': it contains itself"),
    ("lone surrogate", lambda t: t.delay(text="a\ud800b"), TaskArgumentError, "argument 'text': .*lone surrogate"),
    ("NaN", lambda t: t.delay(payload=math.nan), TaskArgumentError, "argument 'payload': nan has no JSON form"),
    ("infinity", lambda t: t.delay(payload=[-math.inf]), TaskArgumentError, "argument 'payload': -inf has no JSON"),
    ("NUL in a string", lambda t: t.delay(text="a\x00b"), TaskArgumentError, "argument 'text': .*NUL character"),
    ("NUL in bulk", lambda t: t.delay_many([("fine",), t.s(text="a\x00b")]), TaskArgumentError,
     "argument 'text': .*NUL character"),
    ("queue with a space", lambda t: t.apply_async(queue="mail "), ConfigurationError, "queue='mail ': .*whitespace"),
    ("queue with a comma", lambda t: t.apply_async(queue="mail,sms"), ConfigurationError, "queue='mail,sms': .*comma"),
    ("async NaN", lambda t: asyncio.run(t.adelay(payload=math.nan)), TaskArgumentError, "argument 'payload': nan"),
]


def register(app: App, ran: list[Any]) -> Task[..., Any]:
    @app.task(name="take")
    def take(payload: Any = None, text: str = "") -> None:
        ran.append(payload)

    return take


def refuse_all(take: Task[..., Any]) -> None:
    for what, enqueue, error, message in BAD_ENQUEUES:
        with pytest.raises(error, match=message):
            enqueue(take)
            pytest.fail(f"{what} was accepted")


def test_bad_declarations_are_configuration_errors_and_register_nothing(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"name='t\\x00nul': must not contain a NUL character"):
        app.task(name="t\x00nul")(lambda: None)
    for queue in (" mail", "mail ", "mail,sms"):
        with pytest.raises(ConfigurationError, match=f"queue={queue!r}"):
            app.task(name="mailer", queue=queue)(lambda: None)
    assert app.tasks == {}


def test_bad_input_inserts_nothing_reaches_no_database_and_leaves_the_worker_running(
        target_app: App, conn: psycopg.Connection[Any]) -> None:
    ran: list[Any] = []
    take = register(target_app, ran)
    with worker_thread(target_app, queues=["default"], poll_interval=0.1):
        refuse_all(take)  # each on a pooled connection of its own
        with target_app.transaction() as tx:
            refuse_all(take)  # each joins the open transaction
            # Refused before a statement was sent: the transaction is not aborted and still commits.
            assert tx.info.transaction_status is TransactionStatus.INTRANS
            # 1e16 as JSON is `1e16`, which jsonb gives back as 10000000000000000: it must stay a float.
            ref = take.delay(payload={"after": "the bad ones", "big": 1e16})
        assert jobs(conn, target_app.schema)[0]["id"] == ref.id
        ref.wait(timeout=30, poll_interval=0.1)  # the worker that was running all along runs it
    rows = jobs(conn, target_app.schema)
    assert [(r["id"], r["state"]) for r in rows] == [(ref.id, "completed")]
    assert ran == [{"after": "the bad ones", "big": 1e16}]
    assert type(ran[0]["big"]) is float



def pgtasks_cli(app: App, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pgtasks", "--app", "tests.apps.slow_app:app", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_command_line_refuses_queues_no_worker_could_serve(
        app: App, database_url: str, conn: psycopg.Connection[Any]) -> None:
    paused = pgtasks_cli(app, database_url, "queues", "pause", " mail")
    assert (paused.returncode, paused.stdout) == (2, "")
    assert "queue=' mail': a queue name must not start or end with whitespace" in paused.stderr
    assert "use 'mail'" in paused.stderr
    assert conn.execute(f'SELECT count(*) FROM "{app.schema}".queues').fetchone() == (0,)
    comma = pgtasks_cli(app, database_url, "queues", "resume", "mail,sms")
    assert comma.returncode == 2 and "queue='mail,sms': a queue name must not contain a comma" in comma.stderr
    # Spaces around the names are the shell's, not the queue's: the worker serves "default".
    spaced = pgtasks_cli(app, database_url, "worker", "--burst", "--queues", " default , mail ")
    assert spaced.returncode == 0, spaced.stderr
