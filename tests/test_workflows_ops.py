"""Workflows from the operator's side (the CLI, jobs show), through PgBouncer's transaction pool, and
the completer's part in them (batches in id order, failed writes retried)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgtasks import App, chain, chord
from pgtasks.cli import main
from pgtasks.core.errors import DatabaseError
from pgtasks.core.models import JobState, Outcome
from pgtasks.worker import completer as completer_module
from pgtasks.worker.completer import Completer
from tests.helpers import drain
from tests.pgbouncer_fixtures import PgBouncerLab
from tests.test_unit_completer import FakePool


def run(app: App, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", app.dsn, "--schema", app.schema, *args])


def test_workflows_list_show_and_cancel_and_jobs_show_name_the_step(app: App) -> None:
    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="total")
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="fail", max_attempts=1)
    def fail(x: int) -> int:
        raise RuntimeError(f"no {x}")

    done = chain(add.s(1, 1), chord([add.s(1), add.s(2)], total.s())).delay()
    failed = chain(add.s(2, 2), fail.s(), add.s(1)).delay()
    drain(app)
    waiting = chain(add.s(3, 3), add.s(1)).delay()

    listed = run(app, "workflows", "list")
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[0]: line.split() for line in listed.output.splitlines()[1:]}
    assert lines[str(done.id)][1:5] == ["chain", "completed", "4", "4"]
    assert lines[str(failed.id)][1:3] == ["chain", "failed"]
    assert lines[str(waiting.id)][1:3] == ["chain", "running"]
    only = json.loads(run(app, "workflows", "list", "--state", "failed", "--json").stdout)
    assert [w["id"] for w in only] == [failed.id]

    shown = run(app, "workflows", "show", str(done.id))
    assert shown.exit_code == 0, shown.output
    text = shown.output.splitlines()
    assert text[0].startswith(f"workflow {done.id}: chain, 4 steps, completed")
    assert text[1:] [:3] == ["chain", f"  [0] job {done.job_ids[0]} add  completed  attempt 1/20  ran "
                             + text[2].split(" ran ")[1], "  chord"]
    assert text[-1].strip().startswith(f"[3] job {done.job_ids[3]} total  completed") and "result=7" in text[-1]
    document = json.loads(run(app, "workflows", "show", str(done.id), "--json").stdout)
    body = document["tree"]["children"][1]["body"]
    assert document["workflow"]["state"] == "completed" and body["job"]["result"] == 7

    bad = run(app, "workflows", "show", str(failed.id)).output
    assert "failed at" in bad and f"job {failed.job_ids[1]} (step 1, chain[1])" in bad
    assert "RuntimeError: no 4" in bad and "WorkflowFailed: workflow" in bad

    step = run(app, "jobs", "show", str(done.job_ids[2])).output
    assert f"workflow:     {done.id}, step 2 (chain[1] > chord.header > group[1])" in step
    as_json = json.loads(run(app, "jobs", "show", str(done.job_ids[2]), "--json").stdout)
    assert (as_json["workflow_id"], as_json["workflow_step"]) == (done.id, 2)
    assert as_json["workflow_position"] == "chain[1] > chord.header > group[1]"

    cancelled = json.loads(run(app, "workflows", "cancel", str(waiting.id), "--json").stdout)
    assert cancelled == {"cancelled": list(waiting.job_ids), "cancel_requested": []}
    assert waiting.state() == "cancelled"
    assert run(app, "workflows", "show", "999999").exit_code == 1
    assert run(app, "workflows", "cancel", str(waiting.id)).exit_code == 1  # nothing left to cancel


def test_a_chord_end_to_end_through_the_transaction_pool(pgbouncer: PgBouncerLab, app: App) -> None:
    pooled = App(pgbouncer.instances["transaction"].dsn, schema=app.schema,
                 application_name=f"pgt-{uuid.uuid4().hex[:8]}")

    @pooled.task(name="square")
    def square(x: int) -> int:
        return x * x

    @pooled.task(name="total")
    def total(values: list[int]) -> int:
        return sum(values)

    try:
        with pooled.transaction():
            ref = chord([square.s(i) for i in range(20)], total.s()).delay()
        rolled_back = None
        with pytest.raises(KeyError), pooled.transaction():
            rolled_back = chord([square.s(1)], total.s()).delay()
            raise KeyError("undo")
        drain(pooled, concurrency=4)
        assert ref.wait(timeout=20) == sum(i * i for i in range(20))
        assert ref.state() == "completed" and rolled_back is not None and rolled_back.state() is None
    finally:
        pooled.close()


class RecordingStore:
    """Fails the first write with the error a deadlock becomes, then records each batch's job ids."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.failed = False

    async def ajob_set_outcome_many(self, conn: object, outcomes: Sequence[Outcome]) -> set[int]:
        if not self.failed:
            self.failed = True
            raise DatabaseError("database error: deadlock detected")
        self.batches.append([o.job_id for o in outcomes])
        return {o.job_id for o in outcomes}


def test_the_completer_writes_a_batch_in_job_id_order_and_retries_a_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(completer_module, "reconnect_delay", lambda failures: 0.0)
    store = RecordingStore()

    async def main() -> Completer:
        completer = Completer(FakePool(), store)  # type: ignore[arg-type]
        for job_id in (30, 10, 20, 11):
            completer.submit(Outcome(job_id, 1, JobState.COMPLETED))
        completer.start()
        assert await completer.flush(timeout=10)
        await completer.stop()
        return completer

    completer = asyncio.run(main())
    assert store.failed and store.batches == [[10, 11, 20, 30]] and completer.written == 4


def test_a_real_deadlock_error_is_a_database_error_the_completer_retries(app: App,
                                                                         conn: psycopg.Connection[Any]) -> None:
    """40P01 reaches the completer as pgtasks.DatabaseError (what its retry loop catches)."""
    with pytest.raises(DatabaseError, match="deadlock"), app.store.errors():
        conn.execute("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01', MESSAGE = 'deadlock detected'; END $$")
