"""What operators do to workflows, and the races it opens: a purge mid-chord, a re-run of a
completed step that fails, a retry while the cleaner deletes, cancelling a finished workflow, a
cancel racing a discard, waiting after the failed step was retried, an errback with a delay."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from pgtasks import App, ConfigurationError, JobDiscardedError, chain, chord
from pgtasks.core.channels import control_channel, jobs_channel
from pgtasks.core.models import ErrorEntry, JobState, Outcome
from pgtasks.leadership.cleaner import Cleaner, Retention
from tests.helpers import drain, run_with_pool
from tests.test_workflows import Tasks, rows


@pytest.fixture
def t(app: App) -> Tasks:
    return Tasks(app)


def states(conn: psycopg.Connection[Any], schema: str) -> dict[int, str]:
    return {job_id: row["state"] for job_id, row in rows(conn, schema).items()}


def test_a_purge_never_deletes_a_step_of_an_unfinished_workflow(app: App, t: Tasks,
                                                               conn: psycopg.Connection[Any]) -> None:
    ref = chord([t.add.s(1, 1), t.add.s(2, 2).set(countdown=3600)], t.total.s()).delay()
    done, later, callback = ref.job_ids
    drain(app)  # the first member completes; the second is scheduled, the callback waits
    with app.connect() as c:
        assert app.store.job_count_purgeable(c, states=["completed", "waiting", "scheduled"]) == 0
        assert app.store.job_purge_many(c, states=["completed", "waiting", "scheduled"]) == 0
    assert states(conn, app.schema) == {done: "completed", later: "scheduled", callback: "waiting"}
    conn.execute(f'UPDATE "{app.schema}".jobs SET run_at = now() WHERE id = %s', [later])
    drain(app)
    assert ref.wait(timeout=5) == 6  # both results reached the callback: nothing was purged under it
    with app.connect() as c:  # finished, the workflow's steps may go
        assert app.store.job_purge_many(c, states=["completed"]) == 3


def test_a_rerun_of_a_completed_step_that_fails_changes_nothing_after_it(app: App, t: Tasks,
                                                                        conn: psycopg.Connection[Any]) -> None:
    ref = chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).on_error(t.errback.s()).delay()
    drain(app)
    assert ref.wait(timeout=5) == 6
    member = ref.job_ids[0]
    with app.connect() as c:
        assert app.store.job_retry_many(c, ids=[member], channel=jobs_channel(app.schema)) == [member]
    # The re-run is discarded (an operator's run of a step whose side effect failed this time).
    conn.execute(f"""UPDATE "{app.schema}".jobs SET state = 'running', attempt = attempt + 1, claims = claims + 1
                     WHERE id = %s""", [member])
    conn.execute(f"""UPDATE "{app.schema}".jobs SET state = 'discarded', finalized_at = now(), result = NULL
                     WHERE id = %s""", [member])
    drain(app)
    assert ref.state() == "completed" and ref.wait(timeout=5) == 6
    assert t.errbacks == []
    assert [row["state"] for row in rows(conn, app.schema).values()] == ["discarded", "completed", "completed"]


def test_a_retried_completed_step_keeps_its_result_while_it_runs_again(app: App, t: Tasks,
                                                                       conn: psycopg.Connection[Any]) -> None:
    ref = chord([t.add.s(1, 1), t.add.s(2, 2).set(countdown=3600)], t.total.s()).delay()
    first, second, _ = ref.job_ids
    drain(app)
    with app.connect() as c:
        app.store.job_retry_many(c, ids=[first], channel=jobs_channel(app.schema))
    claimed = conn.execute(f"""UPDATE "{app.schema}".jobs SET state = 'running', attempt = attempt + 1,
                               claims = claims + 1 WHERE id = %s RETURNING claims""", [first]).fetchone()
    assert claimed is not None
    with app.connect() as c:  # the re-run fails once and will retry: its first result must stay
        async def write() -> None:
            aconn = await psycopg.AsyncConnection.connect(app.dsn, autocommit=True)
            async with aconn:
                await app.store.ajob_set_outcome_many(aconn, [Outcome(
                    first, claimed[0], JobState.RETRYABLE, retry_in=3600,
                    error=ErrorEntry(attempt=2, at=datetime.now(UTC), type="ValueError", message="again",
                                     traceback=None))])
        asyncio.run(write())
        assert c.execute(f'SELECT result::text FROM "{app.schema}".jobs WHERE id = %s', [first]).fetchone() == ("2",)
    conn.execute(f'UPDATE "{app.schema}".jobs SET run_at = now() WHERE id = %s', [second])
    drain(app, queues=["default"])
    assert t.seen[-1] == [2, 4]


def test_the_cleaner_leaves_a_workflow_whose_step_is_retried_while_it_deletes(app: App, t: Tasks,
                                                                             conn: psycopg.Connection[Any]) -> None:
    ref = chain(t.add.s(1, 1), t.add.s(1)).delay()
    drain(app)
    conn.execute(f"UPDATE \"{app.schema}\".jobs SET finalized_at = now() - interval '2 days'")
    conn.execute(f"UPDATE \"{app.schema}\".workflows SET created_at = now() - interval '3 days'")
    operator = psycopg.connect(app.dsn)  # `jobs retry` of the last step, its transaction still open
    try:
        operator.execute("SELECT 1")  # open the transaction: the store's block is then a savepoint in it
        assert app.store.job_retry_many(operator, ids=[ref.job_ids[1]],
                                        channel=jobs_channel(app.schema)) == [ref.job_ids[1]]
        reports: list[Any] = []
        cleaner = threading.Thread(target=lambda: reports.append(
            run_with_pool(app, lambda pool: Cleaner(pool, app.store, retention=Retention()).clean())))
        cleaner.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the cleaner waits on the retried row's lock
            waiting = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
            if waiting and waiting[0] > 0:
                break
            time.sleep(0.02)
        else:
            cleaner.join(timeout=10)
            pytest.fail(f"the cleaner never waited for the operator's retry: {reports}")
        operator.commit()
        cleaner.join(timeout=10)
    finally:
        operator.close()
    assert reports and reports[0].workflows == 0
    assert states(conn, app.schema) == {ref.job_ids[0]: "completed", ref.job_ids[1]: "available"}


def test_cancelling_a_finished_workflow_changes_nothing(app: App, t: Tasks) -> None:
    ref = chain(t.add.s(1, 1), t.add.s(1)).delay()
    drain(app)
    assert ref.cancel() == {}
    assert ref.state() == "completed" and ref.wait(timeout=5) == 3


def test_a_cancel_and_a_discard_of_the_same_workflow_at_once_do_not_deadlock(app: App, t: Tasks,
                                                                            conn: psycopg.Connection[Any]) -> None:
    ref = chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).delay()
    conn.execute(f"""UPDATE "{app.schema}".jobs SET state = 'running', attempt = 1, claims = 1, attempted_at = now(),
                     attempted_by = 'w' WHERE state = 'available'""")
    worker = psycopg.connect(app.dsn)  # a worker discards member 0 and holds its transaction open
    outcome: dict[str, str] = {}
    try:
        worker.execute(f"""UPDATE "{app.schema}".jobs SET state = 'discarded', finalized_at = now()
                           WHERE id = %s""", [ref.job_ids[0]])

        def cancel() -> None:
            try:
                with app.connect() as c:
                    app.store.workflow_cancel(c, ref.id, reason="stop", control=control_channel(app.schema))
                outcome["cancel"] = "committed"
            except Exception as exc:  # noqa: BLE001 - the assertion below names it
                outcome["cancel"] = f"{type(exc).__name__}: {exc}"

        canceller = threading.Thread(target=cancel)
        canceller.start()
        time.sleep(0.3)  # the cancel now waits for member 0's lock, holding nothing the worker needs
        worker.commit()
        canceller.join(timeout=10)
    finally:
        worker.close()
    assert outcome == {"cancel": "committed"}
    assert ref.state() == "failed"  # the discard came first: the workflow failed, then was stopped
    found = rows(conn, app.schema)
    member0, member1, callback = ref.job_ids
    assert found[member0]["state"] == "discarded" and found[callback]["state"] == "cancelled"
    assert found[member1]["state"] == "running" and found[member1]["cancel_requested_at"] is not None


def test_waiting_on_a_failed_workflow_names_the_failure_even_after_that_step_was_retried(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    ref = chord([t.boom.s(1), t.add.s(2, 2)], t.total.s()).delay()
    drain(app)
    with pytest.raises(JobDiscardedError) as first:
        ref.wait(timeout=5)
    conn.execute(f"""UPDATE "{app.schema}".jobs SET state = 'completed', result = '1' WHERE id = %s""",
                 [ref.job_ids[0]])  # as if an operator retried it and it completed
    with pytest.raises(JobDiscardedError) as again:
        ref.wait(timeout=5)
    assert again.value.state == "discarded" and str(again.value) == str(first.value)
    assert "ended completed" not in str(again.value)


def test_an_errback_with_a_delay_or_expiry_is_refused_at_delay(app: App, t: Tasks) -> None:
    for options in ({"countdown": 5}, {"expires": 60}):
        with pytest.raises(ConfigurationError, match="cannot be set on an errback"):
            chain(t.add.s(1, 1), t.add.s(1)).on_error(t.errback.s().set(**options)).delay()  # type: ignore[arg-type]
