"""Workflows against a real PostgreSQL: chain, group, chord, nesting, link/link_error, failure, cancel,
retention, the concurrent completion of a chord's last two members, and the async faces."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import pgtasks
from pgtasks import (
    App,
    ConfigurationError,
    JobCancelledError,
    JobDiscardedError,
    TaskArgumentError,
    chain,
    chord,
    group,
)
from pgtasks.core.channels import jobs_channel
from pgtasks.leadership.cleaner import Cleaner, Retention
from tests.helpers import drain, jobs, run_with_pool, wait_for


class Tasks:
    """The tasks every test uses, registered on the test's App; `calls` counts the runs of each."""

    def __init__(self, app: App) -> None:
        self.calls: Counter[str] = Counter()
        self.errbacks: list[tuple[int, dict[str, Any]]] = []
        self.seen: list[list[int]] = []
        lock = threading.Lock()

        def count(name: str) -> None:
            with lock:
                self.calls[name] += 1

        @app.task(name="add")
        def add(x: int, y: int) -> int:
            count("add")
            return x + y

        @app.task(name="const")
        def const(value: int) -> int:
            count("const")
            return value

        @app.task(name="total")
        def total(values: list[int], bonus: int = 0) -> int:
            count("total")
            self.seen.append(list(values))
            return sum(values) + bonus

        @app.task(name="boom", max_attempts=1)
        def boom(x: int) -> int:
            count("boom")
            raise ValueError(f"boom on {x}")

        @app.task(name="flaky", max_attempts=3, retry=pgtasks.Fixed(0))
        def flaky(x: int) -> int:
            count("flaky")
            if pgtasks.current_job().attempt == 1:
                raise ConnectionError("try again")
            return x * 2

        @app.task(name="silent", store_result=False)
        def silent(x: int) -> int:
            return x

        @app.task(name="errback")
        def errback(job_id: int, error: dict[str, Any]) -> None:
            with lock:
                self.errbacks.append((job_id, error))

        self.add, self.const, self.total, self.boom, self.flaky = add, const, total, boom, flaky
        self.silent, self.errback = silent, errback


@pytest.fixture
def t(app: App) -> Tasks:
    return Tasks(app)


def rows(conn: psycopg.Connection[Any], schema: str) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in jobs(conn, schema)}


def count(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    found = conn.execute(f'SELECT count(*) FROM "{schema}".{table}').fetchone()
    assert found is not None
    return int(found[0])


# -- results flow ------------------------------------------------------------------------------------


def test_chain_passes_each_result_to_the_next_step_and_si_ignores_it(app: App, t: Tasks) -> None:
    ref = (t.add.s(1, 2) | t.add.s(10) | t.add.s(100)).delay()
    ignored = chain(t.add.s(1, 1), t.const.si(5), t.add.s(1)).delay()
    drain(app, concurrency=4)
    assert ref.wait(timeout=10) == 113
    assert ignored.wait(timeout=10) == 6  # const ignored add's 2 and returned 5, then 5 + 1
    assert [(s.task, s.state, s.result) for s in ref.results()] == [
        ("add", "completed", 3), ("add", "completed", 13), ("add", "completed", 113)]
    assert ref.state() == "completed"


def test_group_results_come_in_member_order(app: App, t: Tasks) -> None:
    ref = group(t.add.s(i, i) for i in range(12)).delay()
    drain(app, concurrency=8)
    assert ref.wait(timeout=10) == [2 * i for i in range(12)]


def test_chord_runs_its_callback_once_with_every_result_in_order(app: App, t: Tasks) -> None:
    ref = chord([t.add.s(i, 1) for i in range(30)], t.total.s(bonus=1000)).delay()
    also = (group(t.add.s(i, 0) for i in range(3)) | t.total.s()).delay()  # group | callback is a chord
    drain(app, concurrency=8)
    assert ref.wait(timeout=10) == sum(range(1, 31)) + 1000
    assert also.wait(timeout=10) == 3
    assert sorted(t.seen) == sorted([list(range(1, 31)), [0, 1, 2]])
    assert t.calls["total"] == 2


def test_nesting_chain_with_group_chord_in_chain_and_group_of_chains(app: App, t: Tasks) -> None:
    fan = chain(t.add.s(1, 1), group(t.add.s(1), t.add.s(2)), t.total.s()).delay()  # 2 -> [3, 4] -> 7
    inner = chain(t.const.s(3), chord([t.add.s(1), t.add.s(2)], t.total.s()), t.add.s(100)).delay()
    chains = (group(t.add.s(i, 1) | t.add.s(10) for i in range(4)) | t.total.s()).delay()
    drain(app, concurrency=4)
    assert fan.wait(timeout=10) == 7
    assert inner.wait(timeout=10) == (3 + 1) + (3 + 2) + 100
    assert chains.wait(timeout=10) == sum(i + 11 for i in range(4))


def test_link_on_a_plain_task_runs_the_callback_with_its_result(app: App, t: Tasks) -> None:
    ref = t.add.apply_async((2, 3), link=t.add.s(10), queue="default")
    assert isinstance(ref, pgtasks.JobRef) and ref.task == "add"
    both = t.add.apply_async((1, 1), link=[t.add.s(1), t.add.s(2)])
    drain(app, concurrency=2)
    assert ref.wait(timeout=10) == 5
    with app.connect() as conn:
        by_id = rows(conn, app.schema)
    linked = [r for r in by_id.values() if r["workflow_id"] == by_id[ref.id]["workflow_id"] and r["id"] != ref.id]
    assert [(r["state"], r["result"]) for r in linked] == [("completed", 15)]
    siblings = [r["result"] for r in by_id.values()
                if r["workflow_id"] == by_id[both.id]["workflow_id"] and r["id"] != both.id]
    assert siblings == [3, 4]


# -- transactions --------------------------------------------------------------------------------------


def test_rollback_leaves_no_step_and_commit_makes_the_first_steps_visible_and_wakes_workers(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(RuntimeError, match="undo"), app.transaction():
        chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).delay()
        raise RuntimeError("undo")
    assert count(conn, app.schema, "jobs") == 0 and count(conn, app.schema, "workflows") == 0

    with psycopg.connect(app.dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "{jobs_channel(app.schema)}"')
        with app.transaction():
            ref = chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).delay()
            assert next(listener.notifies(timeout=0.3), None) is None  # nothing before the commit
        woken = next(listener.notifies(timeout=5), None)
    assert woken is not None and woken.payload == "default"
    states = [r["state"] for r in jobs(conn, app.schema)]
    assert states == ["available", "available", "waiting"]
    assert ref.state() == "running"


def test_a_caller_connection_and_bind_join_the_callers_transaction(app: App, t: Tasks,
                                                                   conn: psycopg.Connection[Any]) -> None:
    with app.connect() as own:
        with own.transaction():
            (t.add.s(1, 1) | t.add.s(1)).apply_async(connection=own)
        with own.transaction(), app.bind(own):
            group(t.add.s(1, 1), t.add.s(2, 2)).delay()
        try:
            with own.transaction():
                (t.add.s(1, 1) | t.add.s(1)).apply_async(connection=own)
                raise KeyError("rolled back")
        except KeyError:
            pass
    assert count(conn, app.schema, "workflows") == 2 and count(conn, app.schema, "jobs") == 4


# -- validation at .delay() -----------------------------------------------------------------------------


def test_arguments_are_validated_per_step_at_delay(app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(TaskArgumentError, match=r"workflow step 1 \(chain\[1\]\): add: .*'y'"):
        chain(t.add.s(1, 2), t.add.s()).delay()  # add(result, y): y missing
    with pytest.raises(TaskArgumentError, match=r"workflow step 1 .*parameter 'x' is filled in by the workflow"):
        chain(t.add.s(1, 2), t.add.s(x=1, y=2)).delay()
    with pytest.raises(TaskArgumentError, match=r"workflow step 0 \(chain\[0\]\): add: .*'y'"):
        chain(t.add.s(1), t.add.s(2)).delay()
    with pytest.raises(TaskArgumentError, match=r"group\[1\].*invalid argument: parameter 'y'"):
        group(t.add.s(1, 1), t.add.s(1, "two")).delay()
    with pytest.raises(ConfigurationError, match=r"store_result=False"):
        chain(t.silent.s(1), t.add.s(1)).delay()
    chain(t.silent.s(1), t.const.si(1)).delay()  # an immutable step needs no result: accepted
    with pytest.raises(TaskArgumentError, match=r"link_error \(add\): add: too many positional arguments"):
        chain(t.add.s(1, 1), t.add.s(1)).apply_async(link_error=t.add.s(1))  # add(job_id, error) takes no more
    with pytest.raises(TaskArgumentError, match=r"link_error \(const\): const must accept \(job_id, error\)"):
        chain(t.add.s(1, 1), t.add.s(1)).apply_async(link_error=t.const.s())
    assert count(conn, app.schema, "workflows") == 1  # only the accepted one
    other = App(app.dsn, schema=app.schema)

    @other.task(name="foreign")
    def foreign(x: int) -> int:
        return x

    with pytest.raises(ConfigurationError, match="another App"):
        chain(t.add.s(1, 1), foreign.s()).delay()
    other.close()


# -- failure ---------------------------------------------------------------------------------------------


def test_a_failed_step_cancels_the_waiting_steps_naming_it_and_runs_link_error_once(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    ref = chain(t.add.s(1, 1), t.boom.s(), t.add.s(1), t.total.si([1])).on_error(t.errback.s()).delay()
    drain(app)
    by_id = rows(conn, app.schema)
    _first, failed, third, fourth = ref.job_ids
    assert [by_id[i]["state"] for i in ref.job_ids] == ["completed", "discarded", "cancelled", "cancelled"]
    for waiting in (third, fourth):
        message = by_id[waiting]["errors"][-1]["message"]
        assert by_id[waiting]["errors"][-1]["type"] == "WorkflowFailed"
        assert f"step 1 (job {failed}, boom) ended discarded: ValueError: boom on 2" in message
    assert len(t.errbacks) == 1
    job_id, error = t.errbacks[0]
    assert job_id == failed and error["type"] == "ValueError" and error["message"] == "boom on 2"
    with pytest.raises(JobDiscardedError) as raised:
        ref.wait(timeout=5)
    assert raised.value.job_id == failed and raised.value.error_type == "ValueError"
    assert ref.state() == "failed"
    assert t.calls["add"] == 1 and t.calls["total"] == 0


def test_a_failed_chord_member_lets_the_others_finish_and_the_callback_never_runs(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    ref = chord([t.add.s(1, 1), t.boom.s(7), t.add.s(2, 2), t.boom.s(8)], t.total.s()).apply_async(
        link_error=t.errback.s())
    drain(app, concurrency=1)
    by_id = rows(conn, app.schema)
    assert [by_id[i]["state"] for i in ref.job_ids] == ["completed", "discarded", "completed", "discarded",
                                                        "cancelled"]
    assert t.calls["total"] == 0
    assert [job_id for job_id, _ in t.errbacks] == [ref.job_ids[1]]  # the first failure only
    with pytest.raises(JobDiscardedError, match="boom on 7"):
        ref.wait(timeout=5)


def test_retries_of_a_step_do_not_rerun_earlier_steps(app: App, t: Tasks) -> None:
    ref = chain(t.add.s(1, 1), t.flaky.s(), t.add.s(1)).delay()
    drain(app)
    assert ref.wait(timeout=5) == 5
    assert t.calls == Counter({"add": 2, "flaky": 2})
    assert [s.attempt for s in ref.results()] == [1, 2, 1]


def test_cancelling_one_waiting_step_fails_the_workflow(app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    ref = chain(t.add.s(1, 1), t.add.s(1), t.add.s(1)).on_error(t.errback.s()).delay()
    done = app.store.job_cancel_many(conn, [ref.job_ids[1]], reason="not needed", control="x")
    assert done == {ref.job_ids[1]: "cancelled"}
    drain(app)
    assert [r["state"] for r in jobs(conn, app.schema)][:3] == ["completed", "cancelled", "cancelled"]
    assert [job_id for job_id, _ in t.errbacks] == [ref.job_ids[1]]
    with pytest.raises(JobCancelledError, match="not needed"):
        ref.wait(timeout=5)
    assert ref.state() == "cancelled"


# -- cancel ------------------------------------------------------------------------------------------------


def test_cancel_ends_every_unfinished_step_and_asks_running_ones_to_stop(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    ref = chord([t.add.s(1, 1), t.add.s(2, 2), t.add.s(3, 3)], t.total.s()).on_error(t.errback.s()).delay()
    member, running, _pending, callback = ref.job_ids
    conn.execute(f"""UPDATE "{app.schema}".jobs SET state = 'completed', finalized_at = now(), result = '2'
                     WHERE id = {member}""")
    conn.execute(f"""UPDATE "{app.schema}".jobs SET state = 'running', attempt = 1, claims = 1,
                     attempted_at = now(), attempted_by = 'w' WHERE id = {running}""")  # as a claim does
    done = ref.cancel()
    assert done == {running: "cancel_requested", ref.job_ids[2]: "cancelled", callback: "cancelled"}
    by_id = rows(conn, app.schema)
    assert by_id[running]["state"] == "running" and by_id[running]["cancel_requested_at"] is not None
    assert by_id[callback]["errors"][-1]["message"] == f"workflow {ref.id} cancelled"
    assert ref.state() == "cancelled"
    drain(app)
    assert t.errbacks == [] and count(conn, app.schema, "jobs") == 4  # a cancel runs no link_error


# -- exactly once ------------------------------------------------------------------------------------------


def _complete(conn: psycopg.Connection[Any], schema: str, job_id: int, result: int) -> None:
    conn.execute(f"""UPDATE "{schema}".jobs SET state = 'completed', finalized_at = now(), result = %s::jsonb
                     WHERE id = %s AND state = 'running'""", [str(result), job_id])


def _claim_all(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(f"""UPDATE "{schema}".jobs SET state = 'running', attempt = 1, claims = 1, attempted_at = now(),
                     attempted_by = 'test' WHERE state = 'available'""")


def test_the_last_two_members_completing_at_once_start_the_callback_exactly_once(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    """A completes member 1 and holds its transaction open (the callback's row stays locked); B's
    completion of member 2 blocks on that row; A commits; B must see the count reach 0 and A's result."""
    ref = chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).delay()
    first, second, callback = ref.job_ids
    _claim_all(conn, app.schema)
    with psycopg.connect(app.dsn) as a, psycopg.connect(app.dsn) as b:
        _complete(a, app.schema, first, 2)  # a's transaction stays open
        b_pid = b.info.backend_pid
        errors: list[BaseException] = []

        def complete_second() -> None:
            try:
                _complete(b, app.schema, second, 4)
                b.commit()
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
                errors.append(exc)

        thread = threading.Thread(target=complete_second)
        thread.start()

        def b_waits_for_a_lock() -> bool:
            row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [b_pid]).fetchone()
            return row is not None and row[0] == "Lock"

        wait_for(b_waits_for_a_lock, timeout=10)
        assert rows(conn, app.schema)[callback]["wait_count"] == 2  # neither decrement is committed
        a.commit()
        thread.join(timeout=10)
        assert not thread.is_alive() and errors == []
    done = rows(conn, app.schema)[callback]
    assert (done["state"], done["wait_count"], done["args"]) == ("available", 0, {"values": [2, 4]})
    drain(app)
    assert ref.wait(timeout=5) == 6 and t.calls["total"] == 1 and t.seen == [[2, 4]]


def test_members_completing_in_one_statement_start_the_callback_once(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    """The completer writes a batch in one UPDATE: the second member's trigger must see the first's result."""
    ref = chord([t.add.s(1, 1), t.add.s(2, 2), t.add.s(3, 3)], t.total.s()).delay()
    _claim_all(conn, app.schema)
    conn.execute(f"""UPDATE "{app.schema}".jobs AS j SET state = 'completed', finalized_at = now(), result = o.r
                     FROM (VALUES ({ref.job_ids[2]}, '6'::jsonb), ({ref.job_ids[0]}, '2'), ({ref.job_ids[1]}, '4'))
                          AS o(id, r) WHERE j.id = o.id""")
    callback = rows(conn, app.schema)[ref.job_ids[3]]
    assert (callback["state"], callback["args"]) == ("available", {"values": [2, 4, 6]})


def test_a_member_completed_twice_does_not_run_the_callback_twice(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    ref = chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).delay()
    drain(app)
    assert ref.wait(timeout=5) == 6
    retried = app.store.job_retry_many(conn, ids=[ref.job_ids[0]], channel=jobs_channel(app.schema))
    assert retried == [ref.job_ids[0]]
    drain(app)
    by_id = rows(conn, app.schema)
    assert by_id[ref.job_ids[0]]["attempt"] == 2 and by_id[ref.job_ids[0]]["state"] == "completed"
    assert t.calls["add"] == 3 and t.calls["total"] == 1 and count(conn, app.schema, "jobs") == 3


def test_an_operator_retry_skips_a_step_cancelled_before_its_input_came(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    ref = chain(t.boom.s(1), t.add.s(1)).delay()
    drain(app)
    assert app.store.job_retry_many(conn, ids=[ref.job_ids[1]], channel=jobs_channel(app.schema)) == []


# -- retention ------------------------------------------------------------------------------------------------


def test_the_cleaner_deletes_a_workflow_only_whole_and_past_retention(
        app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    done = chain(t.add.s(1, 1), t.add.s(1)).delay()
    unfinished = chain(t.add.s(1, 1), t.add.s(1)).delay()
    drain(app)
    plain = t.add.delay(1, 1)
    drain(app)
    conn.execute(f'UPDATE "{app.schema}".jobs SET state = \'running\' WHERE id = {unfinished.job_ids[1]}')
    conn.execute(f"UPDATE \"{app.schema}\".jobs SET finalized_at = now() - interval '2 days'")
    conn.execute(f"UPDATE \"{app.schema}\".workflows SET created_at = now() - interval '3 days'")
    conn.execute(f"UPDATE \"{app.schema}\".jobs SET finalized_at = now() WHERE id = {done.job_ids[1]}")

    async def clean(pool: Any) -> Any:
        return await Cleaner(pool, app.store, retention=Retention(completed=timedelta(days=1))).clean()

    first = run_with_pool(app, clean)
    assert (first.workflows, first.jobs["completed"]) == (0, 1)  # the plain job; done's newest step is recent
    remaining = {r["id"] for r in jobs(conn, app.schema)}
    assert plain.id not in remaining and set(done.job_ids) | set(unfinished.job_ids) <= remaining
    conn.execute(f"UPDATE \"{app.schema}\".jobs SET finalized_at = now() - interval '2 days'")
    second = run_with_pool(app, clean)
    assert (second.workflows, second.workflow_jobs) == (1, 2)
    assert {r["id"] for r in jobs(conn, app.schema)} == set(unfinished.job_ids)
    found = conn.execute(f'SELECT id FROM "{app.schema}".workflows').fetchall()
    assert found == [(unfinished.id,)]


# -- async faces and big workflows ----------------------------------------------------------------------------


def test_the_async_faces(app: App, t: Tasks, conn: psycopg.Connection[Any]) -> None:
    async def main() -> tuple[Any, ...]:
        ref = await chord([t.add.s(i, i) for i in range(3)], t.total.s()).adelay()
        async with await psycopg.AsyncConnection.connect(app.dsn) as own, own.transaction():
            other = await (t.add.s(1, 1) | t.add.s(1)).aapply_async(connection=own)
        linked = await t.add.aapply_async((5, 5), link=t.add.s(1))
        await asyncio.to_thread(drain, app, concurrency=2)
        results = (await ref.await_result(timeout=5), await other.await_result(timeout=5),
                   await ref.astate(), [s.result for s in await ref.aresults()], await linked.await_result(timeout=5))
        stopped = await (t.add.s(1, 1) | t.add.s(1)).adelay()
        cancelled = await stopped.acancel()
        await app.aclose()
        return (*results, cancelled, stopped)

    total, chained, state, per_step, linked, cancelled, stopped = asyncio.run(main())
    assert (total, chained, state, per_step, linked) == (6, 3, "completed", [0, 2, 4, 6], 10)
    assert cancelled == dict.fromkeys(stopped.job_ids, "cancelled")


def test_a_big_chord_is_inserted_by_copy_and_runs_its_callback_once(app: App, t: Tasks) -> None:
    started = time.perf_counter()
    ref = chord([t.add.s(i, 0) for i in range(600)], t.total.s()).delay()
    assert time.perf_counter() - started < 10
    drain(app, concurrency=16)
    assert ref.wait(timeout=30) == sum(range(600)) and t.seen == [list(range(600))]


def test_eager_mode_refuses_workflows(app: App, t: Tasks) -> None:
    from pgtasks.testing import eager

    with eager(app), pytest.raises(ConfigurationError, match="eager mode"):
        (t.add.s(1, 1) | t.add.s(1)).delay()
