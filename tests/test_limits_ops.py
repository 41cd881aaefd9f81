"""Flow control for operators, against a real PostgreSQL: `pgtasks queues limit` (set, change, clear,
its validation and --json), the NOTIFY that makes a running worker re-read its limited queues at
once, what `queues list`, `stats` and the dashboard's queues page show of each limit (running,
ready, held back), the dashboard's limit form, and the cleaner's removal of full key buckets.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from pgtasks import App, Limit
from pgtasks.cli import main
from pgtasks.dashboard import asgi_app
from pgtasks.dashboard.render import NOTHING as D
from pgtasks.leadership.cleaner import Cleaner
from pgtasks.ops.limits import natural_rate, rate_text
from pgtasks.testing import worker_thread
from tests.helpers import logged, run_with_pool, wait_for
from tests.test_dashboard import Node, cells, csrf, page, problem

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def run(app: App, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", app.dsn, "--schema", app.schema, *args])


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stored(conn: psycopg.Connection[Any], schema: str, queue: str) -> tuple[Any, ...] | None:
    """The queue's row: (concurrency, rate, burst, tokens)."""
    return conn.execute(f'SELECT concurrency, rate, burst, tokens FROM "{schema}".queues WHERE name = %s',
                        [queue]).fetchone()


def declare(app: App) -> None:
    """What a worker does at start: write the code's limits (task_limits rows, queue rows)."""
    tasks = {t.name: (t.config.queue, t.config.limits) for t in app.tasks.values()}
    with app.connect() as conn:
        app.store.limits_declare(conn, app.registry.queue_limits, tasks)


# -- the rate as shown -------------------------------------------------------------------------------


def test_stored_rates_read_in_their_natural_unit() -> None:
    assert str(natural_rate(100 / 60)) == "100/m"
    assert str(natural_rate(10.0)) == "10/s"
    assert str(natural_rate(5 / 3600)) == "5/h"
    assert str(natural_rate(30 / 300)) == "6/m"  # "30/5m"
    assert str(natural_rate(1.5)) == "90/m"
    assert rate_text(100 / 60, 4) == "100/m, burst 4" and rate_text(None) is None


# -- pgtasks queues limit ------------------------------------------------------------------------------


def test_cli_sets_changes_shows_and_clears_a_queue_limit(app: App, conn: psycopg.Connection[Any]) -> None:
    first = run(app, "queues", "limit", "pay", "5", "--json")
    assert as_json(first) == {"queue": "pay", "concurrency": 5, "rate": None, "rate_text": None, "burst": None,
                              "changed": True, "in_use": False}
    assert "no job, worker or registered task uses queue 'pay'" in first.stderr
    assert stored(conn, app.schema, "pay") == (5, None, None, None)

    # A rate alone keeps the concurrency; its burst defaults to a tenth of a second's worth, at least 1.
    shown = as_json(run(app, "queues", "limit", "pay", "--rate", "100/m", "--json"))
    assert (shown["concurrency"], shown["rate_text"], shown["burst"]) == (5, "100/m", 1)
    assert stored(conn, app.schema, "pay") == (5, pytest.approx(100 / 60), 1, None)
    text = run(app, "queues", "limit", "pay", "--rate", "10/s", "--burst", "4")
    assert text.exit_code == 0, text.output
    assert text.stdout == ("queue pay: at most 5 running at once, at most 10/s starting (burst 4); "
                           "workers apply it from their next claim\n")

    # NAME alone shows what is in force and writes nothing: a bucket part-way empty stays so.
    conn.execute(f'UPDATE "{app.schema}".queues SET tokens = 1.5, tokens_at = now() WHERE name = %s', ["pay"])
    alone = as_json(run(app, "queues", "limit", "pay", "--json"))
    assert alone["changed"] is False and (alone["concurrency"], alone["rate"], alone["burst"]) == (5, 10.0, 4)
    assert stored(conn, app.schema, "pay") == (5, 10.0, 4, 1.5)
    assert run(app, "queues", "limit", "pay").stdout == "queue pay: at most 5 running at once, at most 10/s " \
                                                         "starting (burst 4)\n"

    assert stored_after(app, conn, "--clear-rate") == (5, None, None, None)
    # --clear with values: only those are left.
    assert stored_after(app, conn, "--clear", "--rate", "1/h") == (None, pytest.approx(1 / 3600), 1, None)
    assert stored_after(app, conn, "3", "--clear") == (3, None, None, None)
    cleared = as_json(run(app, "queues", "limit", "pay", "--clear", "--json"))
    assert (cleared["concurrency"], cleared["rate"], cleared["burst"]) == (None, None, None)
    assert run(app, "queues", "limit", "pay").stdout == "queue pay: no limit of its own\n"
    with app.connect() as c:
        assert app.store.limits_list(c) == []

    # A queue in use (a job names it) gets no warning.
    @app.task(name="payments.charge", queue="pay")
    def charge() -> None: ...

    charge.delay()
    used = run(app, "queues", "limit", "pay", "2", "--json")
    assert as_json(used)["in_use"] is True and used.stderr == ""


def stored_after(app: App, conn: psycopg.Connection[Any], *args: str) -> tuple[Any, ...] | None:
    result = run(app, "queues", "limit", "pay", *args)
    assert result.exit_code == 0, result.output
    return stored(conn, app.schema, "pay")


@pytest.mark.parametrize(("args", "message"), [
    (["0"], "concurrency=0 for queue 'pay': give at least 1 job at once; to stop the queue, pause it"),
    (["--rate", "lots"], "rate='lots': expected a rate like '10/s', '100/m' or '5/h'"),
    (["--rate", "0/s"], "rate='0/s': a rate must be positive"),
    (["--burst", "3"], "burst=3 without a rate for queue 'pay': a burst is part of a rate limit, give the rate "
                       "with it (e.g. --rate 100/m --burst 3)"),
    (["--rate", "1/s", "--burst", "0"], "burst=0: expected a positive whole number"),
    (["--rate", "1/s", "--clear-rate"], "--clear-rate with a rate or burst for queue 'pay'"),
])
def test_cli_refuses_bad_values_with_exit_2_and_writes_nothing(app: App, conn: psycopg.Connection[Any],
                                                               args: list[str], message: str) -> None:
    assert run(app, "queues", "limit", "pay", "4").exit_code == 0
    result = run(app, "queues", "limit", "pay", *args)
    assert result.exit_code == 2 and message in result.stderr, result.output
    document = json.loads(run(app, "queues", "limit", "pay", *args, "--json").stdout)
    assert document["error"]["type"] == "ConfigurationError" and message in document["error"]["message"]
    assert document["error"]["exit_code"] == 2
    assert stored(conn, app.schema, "pay") == (4, None, None, None)


def test_cli_refuses_a_bad_queue_name_and_a_count_that_is_not_a_number(app: App) -> None:
    result = run(app, "queues", "limit", "a,b", "3")
    assert result.exit_code == 2 and "must not contain a comma" in result.stderr
    result = run(app, "queues", "limit", "pay", "many")
    assert result.exit_code == 2 and "'many' is not a valid integer" in result.stderr


def test_a_change_reaches_a_running_worker_at_once_not_at_its_next_poll(app: App) -> None:
    """The worker polls once an hour: only the NOTIFY can make it see the new limit within the test."""
    with worker_thread(app, queues=["pay", "other"], poll_interval=3600) as worker:
        assert worker.flow.limited == []
        assert run(app, "queues", "limit", "pay", "2").exit_code == 0
        wait_for(lambda: worker.flow.limited == ["pay"], timeout=30)
        assert run(app, "queues", "limit", "pay", "--clear").exit_code == 0
        wait_for(lambda: worker.flow.limited == [], timeout=30)


# -- what list, stats and the dashboard show -------------------------------------------------------------


@pytest.fixture
def limited(app: App) -> App:
    """Limits of every kind, each with running jobs and ready ones it holds back (claimed by the limited claim):

    - queue "capped" (2 at once): 5 jobs, 2 running, 3 ready, all 3 held (at its limit);
    - queue "roomy" (5 at once): 10 jobs, 2 claimed, 8 ready, 5 held (3 may still start);
    - queue "paced" (1/h, burst 2): 5 jobs, 2 started, the bucket empty: 3 ready, 3 held;
    - task "whole" (3 at once, queue "tasks"): 4 jobs, 3 running, 1 held;
    - task "keyed" (1 per customer, queue "keyed"): customers 1, 1, 1, 2, 2, 3: one running per
      customer, 3 ready, 3 held over 2 keys;
    - task "keyrate" (1/h per customer, burst 1, queue "keyrate"): customers 1, 1, 2: 2 started,
      customer 1's second held.
    """
    app.queue("capped", concurrency=2)
    app.queue("roomy", concurrency=5)
    app.queue("paced", rate_limit="1/h", burst=2)

    @app.task(name="plain.capped", queue="capped")
    def capped(n: int) -> None: ...

    @app.task(name="plain.roomy", queue="roomy")
    def roomy(n: int) -> None: ...

    @app.task(name="plain.paced", queue="paced")
    def paced(n: int) -> None: ...

    @app.task(name="whole", queue="tasks", concurrency=3)
    def whole(n: int) -> None: ...

    @app.task(name="keyed", queue="keyed", concurrency=Limit(max=1, key="customer"))
    def keyed(customer: int, n: int) -> None: ...

    @app.task(name="keyrate", queue="keyrate", rate_limit=Limit(rate="1/h", key="customer", burst=1))
    def keyrate(customer: int, n: int) -> None: ...

    declare(app)
    for n in range(5):
        capped.delay(n)
        paced.delay(n)
    for n in range(10):
        roomy.delay(n)
    for n in range(4):
        whole.delay(n)
    for n, customer in enumerate([1, 1, 1, 2, 2, 3]):
        keyed.delay(customer, n)
    for n, customer in enumerate([1, 1, 2]):
        keyrate.delay(customer, n)
    with app.connect() as conn:
        claim = app.store.job_fetch_limited
        assert len(claim(conn, queues=["capped", "paced", "tasks", "keyed", "keyrate"], limit=100,
                         worker_id="w").jobs) == 2 + 2 + 3 + 3 + 2
        assert len(claim(conn, queues=["roomy"], limit=2, worker_id="w").jobs) == 2
    return app


# (kind, name) -> (running, ready, held, keys_running, key_held, keys_held)
EXPECTED = {
    ("queue", "capped"): (2, 3, 3, None, None, None),
    ("queue", "paced"): (2, 3, 3, None, None, None),
    ("queue", "roomy"): (2, 8, 5, None, None, None),
    ("task", "keyed"): (3, 3, None, 3, 3, 2),
    ("task", "keyrate"): (2, 1, None, 2, 1, 1),
    ("task", "whole"): (3, 1, 1, 0, None, None),
}


def counts(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in ("running", "ready", "held", "keys_running", "key_held", "keys_held"))


def test_queues_list_json_gives_each_queue_its_limits_with_running_ready_and_held(limited: App) -> None:
    queues = {q["queue"]: q for q in as_json(run(limited, "queues", "list", "--json"))}
    found = {(lim["kind"], lim["name"]): lim for q in queues.values() for lim in q["limits"]}
    assert {key: counts(row) for key, row in found.items()} == EXPECTED
    assert [lim["name"] for lim in queues["keyed"]["limits"]] == ["keyed"]
    assert all(lim["queue"] == name for name, q in queues.items() for lim in q["limits"])
    paced = found[("queue", "paced")]
    assert (paced["rate_text"], paced["burst"], paced["concurrency"]) == ("1/h", 2, None)
    assert paced["tokens"] == pytest.approx(0, abs=0.01)
    keyed = found[("task", "keyed")]
    assert (keyed["key_name"], keyed["key_concurrency"], keyed["concurrency"], keyed["rate"]) == ("customer", 1,
                                                                                                 None, None)
    keyrate = found[("task", "keyrate")]
    assert (keyrate["key_rate_text"], keyrate["key_burst"]) == ("1/h", 1)
    assert found[("queue", "capped")]["concurrency"] == 2 and found[("task", "whole")]["concurrency"] == 3


def test_stats_json_carries_the_same_limits(limited: App) -> None:
    stats = as_json(run(limited, "stats", "--json"))
    found = {(lim["kind"], lim["name"]): counts(lim) for q in stats["queues"] for lim in q["limits"]}
    assert found == EXPECTED


def limit_rows(text: str) -> dict[str, list[str]]:
    """The LIMIT table of `queues list` / `stats`: scope -> the other cells, split on runs of 2+ spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("LIMIT "))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        parts = [p for p in line.split("  ") if p.strip()]
        rows[parts[0].strip()] = [p.strip() for p in parts[1:]]
    return rows


@pytest.mark.parametrize("command", [["queues", "list"], ["stats"]])
def test_list_and_stats_text_show_a_line_per_limit(limited: App, command: list[str]) -> None:
    result = run(limited, *command)
    assert result.exit_code == 0, result.output
    assert limit_rows(result.stdout) == {
        "queue capped": ["2", "-", "2", "3", "3", "-"],
        "queue paced": ["-", "1/h, burst 2", "2", "3", "3", "-"],
        "queue roomy": ["5", "-", "2", "8", "5", "-"],
        "task keyed per customer": ["1 per key", "-", "3", "3", "3", "3 running, 2 holding jobs back"],
        "task keyrate per customer": ["-", "1/h per key, burst 1", "2", "1", "1", "2 running, 1 holding jobs back"],
        "task whole": ["3", "-", "3", "1", "1", "-"],
    }


def test_without_limits_list_and_stats_show_no_limits_table(app: App) -> None:
    assert "LIMIT" not in run(app, "queues", "list").stdout
    assert "LIMIT" not in run(app, "stats").stdout


def test_dashboard_queues_page_shows_each_limit_and_the_queues_own(limited: App) -> None:
    with TestClient(asgi_app(limited)) as client:
        doc = page(client, "/queues")
    rows = {tr.attrs["data-limit"]: cells(tr) for tr in doc.by_id("limits").find_all("tr", data_limit=True)}
    assert rows == {
        "queue:capped": ["queue capped", "capped", "2", D, "2", "3", "3", D],
        "queue:paced": ["queue paced", "paced", D, "1/h, burst 2", "2", "3", "3", D],
        "queue:roomy": ["queue roomy", "roomy", "5", D, "2", "8", "5", D],
        "key:keyed": ["task keyed per customer", "keyed", "1 per key", D, "3", "3", "3",
                      "3 running, 2 holding jobs back"],
        "key:keyrate": ["task keyrate per customer", "keyrate", D, "1/h per key, burst 1", "2", "1", "1",
                        "2 running, 1 holding jobs back"],
        "task:whole": ["task whole", "tasks", "3", D, "3", "1", "1", D],
    }
    queues = {tr.attrs["data-queue"]: tr for tr in doc.by_id("queues").find_all("tr", data_queue=True)}
    assert queues["capped"].one("td", cls="limit").words() == "2 at once"
    assert queues["paced"].one("td", cls="limit").words() == "1/h, burst 2"
    assert queues["tasks"].one("td", cls="limit").words() == D  # a task's limit is not the queue's own


def limit_form(doc: Node, queue: str) -> dict[str, str]:
    form = doc.by_id("limit-forms").one("tr", data_queue=queue).one("form")
    assert form.attrs["action"] == "/queues/limit" and form.attrs["method"] == "post"
    return {i.attrs["name"]: i.attrs.get("value", "") for i in form.find_all("input")}


def test_dashboard_limit_form_sets_exactly_what_it_says_audited_and_told_to_workers(
        app: App, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture) -> None:
    app.queue("pay", concurrency=4, rate_limit="100/m", burst=3)
    declare(app)
    caplog.set_level(logging.INFO, logger="pgtasks.dashboard")
    heard: list[str] = []
    listening = threading.Event()

    def listen() -> None:
        with psycopg.connect(app.dsn, autocommit=True) as c:
            c.execute(f'LISTEN "{app.schema}.control"')
            listening.set()
            for note in c.notifies(timeout=30, stop_after=1):
                heard.append(note.payload)

    listener = threading.Thread(target=listen)
    listener.start()
    assert listening.wait(10)
    with TestClient(asgi_app(app)) as client:
        form = limit_form(page(client, "/queues"), "pay")
        assert (form["queue"], form["concurrency"], form["rate"], form["burst"]) == ("pay", "4", "100/m", "3")
        # The form unchanged but for the concurrency: the rate stays, since the form carries it.
        response = client.post("/queues/limit", data={**form, "concurrency": "2"}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/queues"
        listener.join(30)
        assert heard == ["limits"]
        assert stored(conn, app.schema, "pay") == (2, pytest.approx(100 / 60), 3, None)
        # An empty field: no limit of that kind; an empty burst: the rate's default.
        client.post("/queues/limit", data={**form, "concurrency": "", "rate": "20/s", "burst": ""})
        assert stored(conn, app.schema, "pay") == (None, 20.0, 2, None)
        doc = page(client, "/queues")
        assert limit_form(doc, "pay")["rate"] == "20/s"
        assert doc.by_id("queues").one("tr", data_queue="pay").one("td", cls="limit").words() == "20/s, burst 2"
        client.post("/queues/limit", data={**form, "concurrency": "", "rate": "", "burst": ""})
        assert stored(conn, app.schema, "pay") == (None, None, None, None)
        assert [(a["action"], a["queue"], a["concurrency"], a["rate"], a["burst"])
                for a in logged(caplog.records, "dashboard.action")] == [
            ("limit", "pay", 2, "100/m", 3), ("limit", "pay", None, "20/s", 2), ("limit", "pay", None, None, None)]

        caplog.clear()
        token = csrf(client)
        for fields, message in ((({"concurrency": "two"}), "concurrency='two': expected a whole number"),
                                ({"concurrency": "0"}, "concurrency=0 for queue 'pay'"),
                                ({"rate": "fast"}, "rate='fast': expected a rate like"),
                                ({"burst": "5"}, "burst=5 without a rate"),
                                ({"queue": ""}, "queue=''")):
            response = client.post("/queues/limit", data={"csrf": token, "queue": "pay", **fields})
            assert response.status_code == 400 and message in problem(response), (fields, problem(response))
        assert stored(conn, app.schema, "pay") == (None, None, None, None)
        assert logged(caplog.records, "dashboard.action") == []


def test_dashboard_read_only_shows_limits_without_the_form_and_refuses_the_post(
        limited: App, conn: psycopg.Connection[Any]) -> None:
    before = stored(conn, limited.schema, "capped")
    with TestClient(asgi_app(limited, read_only=True)) as client:
        doc = page(client, "/queues")
        assert doc.by_id("limits").find_all("tr", data_limit=True)
        assert not doc.find_all(id="limit-forms") and not doc.find_all("form", action="/queues/limit")
        response = client.post("/queues/limit", data={"csrf": csrf(client), "queue": "capped", "concurrency": "9"})
        assert response.status_code == 403 and "read-only access" in problem(response)
    with TestClient(asgi_app(limited)) as client:
        page(client, "/queues")
        response = client.post("/queues/limit", data={"csrf": "wrong", "queue": "capped", "concurrency": "9"})
        assert response.status_code == 403
    assert stored(conn, limited.schema, "capped") == before


# -- the cleaner: key buckets ----------------------------------------------------------------------------


def add_bucket(conn: psycopg.Connection[Any], schema: str, task: str, key: str, tokens: float,
               age: timedelta) -> None:
    conn.execute(f'INSERT INTO "{schema}".key_buckets (task, key, tokens, tokens_at) VALUES (%s, %s, %s, %s)',
                 [task, key, tokens, NOW - age])


def buckets(conn: psycopg.Connection[Any], schema: str) -> set[tuple[str, str]]:
    return {(str(t), str(k)) for t, k in conn.execute(f'SELECT task, key FROM "{schema}".key_buckets').fetchall()}


@pytest.fixture
def bucketed(app: App, conn: psycopg.Connection[Any]) -> App:
    """Task "keyed" (1/s per key, burst 5, queue "kq"), "unkeyed" (its row lost its key_rate), and buckets:
    full (5 tokens), refilled (0 tokens 10 s ago: 10 added, capped at 5), exactly full (2 tokens 3 s
    ago), partial (1 token 2 s ago: 3 of 5), brand-new empty (0 tokens now); "gone" has no
    task_limits row, "unkeyed" no key_rate: theirs go whatever their tokens."""
    s = app.schema
    conn.execute(f'INSERT INTO "{s}".queues (name) VALUES (%s)', ["kq"])
    conn.execute(f'INSERT INTO "{s}".task_limits (task, queue, key_name, key_rate, key_burst) '
                 "VALUES ('keyed', 'kq', 'customer', 1.0, 5)")
    conn.execute(f'INSERT INTO "{s}".task_limits (task, queue, concurrency) VALUES (%s, %s, %s)',
                 ["unkeyed", "kq", 2])
    add_bucket(conn, s, "keyed", "full", 5, timedelta(0))
    add_bucket(conn, s, "keyed", "refilled", 0, timedelta(seconds=10))
    add_bucket(conn, s, "keyed", "exact", 2, timedelta(seconds=3))
    add_bucket(conn, s, "keyed", "partial", 1, timedelta(seconds=2))
    add_bucket(conn, s, "keyed", "empty", 0, timedelta(0))
    add_bucket(conn, s, "gone", "1", 0, timedelta(0))
    add_bucket(conn, s, "unkeyed", "1", 0, timedelta(0))
    return app


def test_cleaner_deletes_full_and_orphaned_key_buckets_and_keeps_partial_ones(
        bucketed: App, conn: psycopg.Connection[Any]) -> None:
    async def body(pool: Any) -> Any:
        return await Cleaner(pool, bucketed.store, batch_size=2).clean(now=NOW)

    report = run_with_pool(bucketed, body)
    assert report.key_buckets == 5
    assert buckets(conn, bucketed.schema) == {("keyed", "partial"), ("keyed", "empty")}


def test_cleaner_skips_the_full_buckets_of_a_queue_being_claimed_and_takes_them_next_pass(
        bucketed: App, conn: psycopg.Connection[Any], database_url: str) -> None:
    """A claim holds its queue's row lock while it reads and writes the buckets: the cleaner must
    not delete one under it (a claim that read a bucket as empty would then write it back as
    full). Forced: a transaction holds kq's lock, as limits_lock_queues does, while the cleaner runs."""
    with psycopg.connect(database_url) as claimer:
        claimer.execute(f'SELECT name FROM "{bucketed.schema}".queues WHERE name = %s FOR UPDATE', ["kq"])

        async def body(pool: Any) -> Any:
            return await Cleaner(pool, bucketed.store).clean(now=NOW)

        held = run_with_pool(bucketed, body)
        # Only the buckets no claim uses went; the full ones of the locked queue are left.
        assert held.key_buckets == 2
        assert ("gone", "1") not in buckets(conn, bucketed.schema)
        assert {("keyed", "full"), ("keyed", "refilled"), ("keyed", "exact")} <= buckets(conn, bucketed.schema)
        claimer.rollback()
    after = run_with_pool(bucketed, body)
    assert after.key_buckets == 3
    assert buckets(conn, bucketed.schema) == {("keyed", "partial"), ("keyed", "empty")}


def test_buckets_the_claim_leaves_are_pruned_once_full_again(app: App, conn: psycopg.Connection[Any]) -> None:
    """End to end: the claim writes a key's bucket; at its own time the bucket is not full (kept),
    an hour later it is (deleted), and the next claim starts that key from a full bucket."""
    @app.task(name="keyrate", queue="kr", rate_limit=Limit(rate="60/m", key="customer", burst=2))
    def keyrate(customer: int) -> None: ...

    declare(app)
    keyrate.delay(1)
    with app.connect() as c:
        assert len(app.store.job_fetch_limited(c, queues=["kr"], limit=10, worker_id="w").jobs) == 1
    row = conn.execute(f'SELECT tokens, tokens_at FROM "{app.schema}".key_buckets').fetchone()
    assert row is not None and row[0] == pytest.approx(1)
    at = row[1]

    def clean(now: datetime) -> Any:
        async def body(pool: Any) -> Any:
            return await Cleaner(pool, app.store).clean(now=now)
        return run_with_pool(app, body)

    assert clean(at).key_buckets == 0
    assert clean(at + timedelta(seconds=0.5)).key_buckets == 0  # 1.5 of 2
    assert clean(at + timedelta(seconds=1)).key_buckets == 1  # 2 of 2
    assert buckets(conn, app.schema) == set()


def test_queues_remove_refuses_a_queue_a_limit_applies_in(limited: App, conn: psycopg.Connection[Any]) -> None:
    """Its entry holds the queue's own limits and is the lock a task's limited claim takes: without it
    the jobs of "keyed" could not be claimed until a worker started and wrote it again."""
    for queue in ("capped", "keyed"):
        result = run(limited, "queues", "remove", queue)
        assert result.exit_code == 1 and f"queue {queue} has limits" in result.stderr, result.output
        assert as_json_failure(run(limited, "queues", "remove", queue, "--json"))["outcome"] == "limited"
    assert {"capped", "keyed"} <= {str(r[0]) for r in conn.execute(f'SELECT name FROM "{limited.schema}".queues')}
    assert run(limited, "queues", "limit", "capped", "--clear").exit_code == 0
    assert run(limited, "queues", "remove", "capped").exit_code == 0


def as_json_failure(result: Result) -> Any:
    assert result.exit_code == 1, result.output
    return json.loads(result.stdout)
