"""Enqueueing by name (app.send_task, app.signature) against a real PostgreSQL and worker: a producer
App that does not define the task, and a worker App (tests/apps/discovery/billing/tasks.py) that does.

What is checked where: with no local definition, only options and JSON-encodability at enqueue; the
arguments against the real signature by the worker. With a local definition, everything, at enqueue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import pytest

import pgtasks
from pgtasks import App, ConfigurationError, Limit, TaskArgumentError, UnknownTaskError, chain, chord, group
from pgtasks.testing import eager
from tests.apps.discovery.billing import tasks as billing
from tests.helpers import drain, jobs

QUEUES = ["default", "billing"]


@pytest.fixture
def service(database_url: str, app: App) -> Iterator[App]:
    """The billing service's worker App, on the producer's schema: it defines the billing tasks."""
    worker_app = App(database_url, schema=app.schema)
    worker_app.add_blueprint(billing.tasks)

    @worker_app.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    yield worker_app
    worker_app.close()


@pytest.fixture
def double(app: App) -> pgtasks.Task[[int], int]:
    """A task the producer defines too (the worker runs its own definition of the same name)."""

    @app.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    return double


def row(conn: psycopg.Connection[Any], schema: str, job_id: int) -> dict[str, Any]:
    [found] = [job for job in jobs(conn, schema) if job["id"] == job_id]
    return found


def test_send_task_without_a_local_definition_runs_on_the_worker_that_has_it(
        app: App, service: App, conn: psycopg.Connection[Any]) -> None:
    assert "billing.charge" not in app.tasks
    ref = app.send_task("billing.charge", args=[7], kwargs={"cents": 500, "at": datetime(2024, 1, 2, tzinfo=UTC)},
                        queue="billing", priority=3)
    assert isinstance(ref, pgtasks.JobRef) and ref.task == "billing.charge"
    job = row(conn, app.schema, ref.id)
    assert (job["task"], job["queue"], job["priority"], job["state"]) == ("billing.charge", "billing", 3, "available")
    # The by-name form: positional arguments as a list, keyword arguments by name.
    assert job["args"] == {"*args": [7], "cents": 500, "at": "2024-01-02T00:00:00Z"}
    drain(service, queues=QUEUES)
    # The worker bound them to the real signature: the ISO string became a datetime again.
    assert ref.wait(timeout=30) == {"customer_id": 7, "cents": 500, "at": "2024-01-02T00:00:00+00:00"}


def test_send_task_is_transactional(app: App, service: App, conn: psycopg.Connection[Any], database_url: str) -> None:
    with pytest.raises(RuntimeError), app.transaction():
        app.send_task("billing.add_fee", args=[100], queue="billing")
        raise RuntimeError("roll back")
    assert jobs(conn, app.schema) == []
    with app.transaction():
        committed = app.send_task("billing.add_fee", args=[100], queue="billing")
    with psycopg.connect(database_url) as own:
        with app.bind(own):
            bound = app.send_task("billing.add_fee", args=[1], queue="billing")
        explicit = app.send_task("billing.add_fee", args=[2], queue="billing", connection=own)
        assert [job["id"] for job in jobs(conn, app.schema)] == [committed.id]  # not committed yet
    # Leaving psycopg's connection block without an error commits.
    assert [job["id"] for job in jobs(conn, app.schema)] == [committed.id, bound.id, explicit.id]
    drain(service, queues=QUEUES)
    assert [committed.wait(30), bound.wait(30), explicit.wait(30)] == [130, 31, 32]


def test_asend_task_joins_the_async_transaction(app: App, service: App, conn: psycopg.Connection[Any],
                                                database_url: str) -> None:
    async def main() -> tuple[list[int], int]:
        async with await psycopg.AsyncConnection.connect(database_url) as own:
            with app.bind(own):
                first = await app.asend_task("billing.add_fee", args=[10], queue="billing")
            second = await app.asend_task("billing.add_fee", kwargs={"cents": 20, "fee": 5}, queue="billing",
                                          connection=own)
            await own.rollback()
        async with app.atransaction():
            kept = await app.asend_task("billing.add_fee", args=[40], queue="billing")
        return [first.id, second.id], kept.id

    rolled_back, kept = asyncio.run(main())
    assert [job["id"] for job in jobs(conn, app.schema)] == [kept]
    assert kept not in rolled_back
    drain(service, queues=QUEUES)
    assert row(conn, app.schema, kept)["state"] == "completed"


def test_what_send_task_checks_without_a_local_definition(app: App, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(TaskArgumentError, match=r"billing.charge: argument 'args\[1\]': .*cannot be encoded"):
        app.send_task("billing.charge", args=[1, object()])
    with pytest.raises(TaskArgumentError, match=r"argument 'cents': nan has no JSON form"):
        app.send_task("billing.charge", args=[1], kwargs={"cents": float("nan")})
    with pytest.raises(TaskArgumentError, match=r"argument 'note': .*NUL character"):
        app.send_task("billing.charge", kwargs={"note": "a\x00b"})
    with pytest.raises(TaskArgumentError, match=r"keyword argument '\*0': .*reserved"):
        app.send_task("billing.charge", kwargs={"*0": 1})
    with pytest.raises(ConfigurationError, match=r"priority=99999"):
        app.send_task("billing.charge", args=[1], priority=99999)
    with pytest.raises(ConfigurationError, match=r"pass either countdown= or eta="):
        app.send_task("billing.charge", args=[1], countdown=5, eta=datetime.now(UTC))
    with pytest.raises(ConfigurationError, match=r"args='abc': expected a list or tuple"):
        app.send_task("billing.charge", args="abc")
    with pytest.raises(ConfigurationError, match=r"kwargs=.*expected a dict"):
        app.send_task("billing.charge", kwargs=[("cents", 1)])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"a task name is a non-empty string"):
        app.send_task("")
    assert jobs(conn, app.schema) == []
    # Not checked: the count, names and types of the arguments, nor that the task exists anywhere.
    wrong = app.send_task("billing.charge", args=["seven"], kwargs={"colour": "red"}, queue="billing")
    nowhere = app.send_task("no.such.task", args=[1.5e16], countdown=60, expires=3600, max_attempts=2,
                            unique_key="once")
    job = row(conn, app.schema, nowhere.id)
    assert (job["state"], job["max_attempts"], job["unique_key"]) == ("scheduled", 2, "once")
    assert job["args"] == {"*args": [1.5e16]} and isinstance(job["args"]["*args"][0], float)  # kept a float
    assert row(conn, app.schema, wrong.id)["state"] == "available"


def test_the_worker_checks_arguments_sent_by_name(app: App, service: App, conn: psycopg.Connection[Any]) -> None:
    missing = app.send_task("billing.charge", args=[7], queue="billing", max_attempts=1)
    mistyped = app.send_task("billing.charge", args=["seven", 5], queue="billing", max_attempts=1)
    extra = app.send_task("billing.add_fee", args=[1], kwargs={"colour": "red"}, queue="billing", max_attempts=1)
    drain(service, queues=QUEUES)
    errors = {ref.id: row(conn, app.schema, ref.id)["errors"][-1] for ref in (missing, mistyped, extra)}
    for ref in (missing, mistyped, extra):
        assert row(conn, app.schema, ref.id)["state"] == "discarded"
        assert errors[ref.id]["type"] == "TaskArgumentError"
        assert "the job was enqueued by name" in errors[ref.id]["message"]
    assert "missing a required argument: 'cents'" in errors[missing.id]["message"]
    assert "parameter 'customer_id'" in errors[mistyped.id]["message"]
    assert "unexpected keyword argument 'colour'" in errors[extra.id]["message"]


def test_the_defaults_are_every_tasks_so_the_queue_must_be_given(app: App, service: App,
                                                                  conn: psycopg.Connection[Any]) -> None:
    ref = app.send_task("billing.add_fee", args=[1])  # billing.add_fee runs in queue "billing"
    job = row(conn, app.schema, ref.id)
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("default", 0, 20)
    drain(service, queues=["billing"])
    assert ref.state() == "available"  # nobody serves "default" for it here


def test_send_task_with_a_local_definition_uses_it(app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="billing.refund", queue="billing", priority=4, max_attempts=3, unique=True,
              concurrency=Limit(max=1, key="customer_id"))
    def refund(customer_id: int, cents: int = 100) -> int:
        return cents

    with pytest.raises(TaskArgumentError, match=r"missing a required argument: 'customer_id'"):
        app.send_task("billing.refund")
    with pytest.raises(TaskArgumentError, match=r"parameter 'customer_id'"):
        app.send_task("billing.refund", args=["x"])
    with pytest.raises(ConfigurationError, match=r"this task has limits, enforced in its own queue 'billing'"):
        app.send_task("billing.refund", args=[1], queue="other")
    ref = app.send_task("billing.refund", args=[9])
    again = app.send_task("billing.refund", kwargs={"customer_id": 9})  # the same unique key: the same job
    assert again.id == ref.id
    job = row(conn, app.schema, ref.id)
    assert job["args"] == {"customer_id": 9}  # the normal form: by parameter name
    assert (job["queue"], job["priority"], job["max_attempts"], job["limit_key"]) == ("billing", 4, 3, "9")
    assert job["unique_key"] is not None
    # By name only, no limit key can be computed: a per-key limit does not apply to the job.
    other = App(app.dsn, schema=app.schema)
    try:
        by_name = other.send_task("billing.refund", args=[9], queue="billing")
        assert row(conn, app.schema, by_name.id)["limit_key"] is None
        assert row(conn, app.schema, by_name.id)["unique_key"] is None
    finally:
        other.close()


def test_eager_mode_runs_local_definitions_only(app: App, double: pgtasks.Task[[int], int]) -> None:
    with eager(app) as refs:
        assert app.send_task("double", args=[4]).wait() == 8
        with pytest.raises(UnknownTaskError, match=r"billing.charge is not defined in this process"):
            app.send_task("billing.charge", args=[1])
    assert len(refs) == 1


def test_a_chain_mixing_a_local_task_and_by_name_steps(app: App, service: App, double: pgtasks.Task[[int], int],
                                                       conn: psycopg.Connection[Any]) -> None:
    # double (local) -> billing.add_fee (by name, receives 10 first) -> double (local).
    fee = app.signature("billing.add_fee", kwargs={"fee": 1}, queue="billing")
    assert fee.task.name == "billing.add_fee" and "by name" in repr(fee.task)
    ref = chain(double.s(5), fee, double.s()).delay()
    steps = {job["task"]: job for job in jobs(conn, app.schema)}
    assert steps["billing.add_fee"]["input_param"] == "*0"  # filled in by the database, first positionally
    assert steps["billing.add_fee"]["args"] == {"*args": [], "fee": 1}
    drain(service, queues=QUEUES)
    assert ref.wait(timeout=30) == 22


def test_a_chord_of_by_name_steps_with_a_local_body_and_an_immutable_step(
        app: App, service: App, double: pgtasks.Task[[int], int]) -> None:
    header = group(app.signature("billing.add_fee", args=[cents], queue="billing") for cents in (0, 10, 20))
    total = app.signature("billing.total", queue="billing")
    ref = (chord(header, total) | double.s()).delay()
    fixed = chain(double.s(1), app.signature("billing.add_fee", args=[100], immutable=True, queue="billing")).delay()
    drain(service, queues=QUEUES)
    assert ref.wait(timeout=30) == 2 * (30 + 40 + 50)
    assert fixed.wait(timeout=30) == 130


def test_an_errback_by_name_receives_the_job_id_and_error(app: App, service: App,
                                                           conn: psycopg.Connection[Any]) -> None:
    errback = app.signature("billing.record_failure", kwargs={"note": "n: "}, queue="billing")
    ref = app.signature("billing.decline", args=[5], queue="billing", max_attempts=1).apply_async(link_error=errback)
    also = app.send_task("billing.decline", args=[6], queue="billing", max_attempts=1, link_error=errback)
    drain(service, queues=QUEUES)
    results = [job["result"] for job in jobs(conn, app.schema) if job["task"] == "billing.record_failure"]
    assert sorted(results) == sorted([f"n: job {ref.id} failed: ValueError", f"n: job {also.id} failed: ValueError"])


def test_a_signature_by_name_enqueues_alone_and_in_bulk(app: App, service: App) -> None:
    one = app.signature("billing.add_fee", args=[1], queue="billing").delay()
    partial = app.signature("billing.add_fee", kwargs={"fee": 0}, queue="billing").delay(7)
    many = app.enqueue_many([app.signature("billing.add_fee", args=[n], queue="billing") for n in range(3)])
    drain(service, queues=QUEUES)
    assert [one.wait(30), partial.wait(30)] == [31, 7]
    assert [ref.wait(30) for ref in many] == [30, 31, 32]


def test_a_signature_with_a_local_definition_is_the_tasks_own(app: App, double: pgtasks.Task[[int], int]) -> None:
    sig = app.signature("double", args=[3], priority=2)
    assert sig.task is double and sig.options.priority == 2 and not sig.immutable
    assert app.signature("double", args=[3], immutable=True).immutable
    with pytest.raises(TaskArgumentError, match=r"parameter 'x'"):
        app.signature("double", args=["three"]).delay()


def test_a_result_of_a_task_sent_by_name_is_plain_json_here(app: App, service: App) -> None:
    ref = app.send_task("billing.charge", args=[1, 2], kwargs={"at": "2024-05-06T07:08:09+00:00"}, queue="billing")
    drain(service, queues=QUEUES)
    # No local return annotation to decode to: the result is what the JSON holds.
    assert ref.wait(timeout=30) == msgspec.json.decode(b'{"customer_id":1,"cents":2,"at":"2024-05-06T07:08:09+00:00"}')
