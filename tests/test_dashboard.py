"""The dashboard through Starlette's TestClient against a real PostgreSQL (and PgBouncer): every page
with real data, every filter, every action, the permissions, CSRF, escaping, the audit log, the
standalone server's bind check and base path, and mounting in FastAPI.

Pages and filters read one module-wide schema (`world`) that is never changed; every test that acts
gets a fresh schema of its own (the `app` fixture), so none depends on another's order.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx2
import psycopg
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.testclient import TestClient

from pgtasks import App, ConfigurationError, Fixed, Retention, current_job
from pgtasks.cli import main
from pgtasks.core.channels import control_channel
from pgtasks.dashboard import Access, Credential, asgi_app, basic_auth
from pgtasks.dashboard.render import NOTHING
from pgtasks.dashboard.serve import build, check_bind, normalize_base_path
from pgtasks.leadership.scheduler import PeriodicScheduler
from pgtasks.ops.doctor import OK, DoctorOptions, run_checks
from pgtasks.testing import worker_thread
from tests.helpers import drain, is_leader, logged, run_with_pool, wait_for
from tests.pgbouncer_fixtures import PgBouncerLab

SCRIPT = "<script>alert(1)</script>"
SCRIPT_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ERROR_HTML = '<b>bold</b> & "quoted" failure'
ERROR_ESCAPED = "&lt;b&gt;bold&lt;/b&gt; &amp; &#34;quoted&#34; failure"
OK_JOBS = 45  # with the others, more than one page of the default 50
HOLDER = "test-holder"  # the worker id that claims "running" jobs in the action tests


# -- a small HTML tree, so assertions read elements instead of matching markup -----------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, *, cls: str | None = None, **attrs: str | bool) -> list[Node]:
        """Descendants (and self) by tag, class and attributes (True: present with any value)."""
        found = []
        for node in self.iter():
            if tag is not None and node.tag != tag:
                continue
            if cls is not None and cls not in node.attrs.get("class", "").split():
                continue
            wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
            if all((k in node.attrs) if v is True else node.attrs.get(k) == v for k, v in wanted.items()):
                found.append(node)
        return found

    def one(self, tag: str | None = None, *, cls: str | None = None, **attrs: str | bool) -> Node:
        found = self.find_all(tag, cls=cls, **attrs)
        assert len(found) == 1, f"expected one {tag} {cls} {attrs}, found {len(found)}"
        return found[0]

    def by_id(self, element_id: str) -> Node:
        return self.one(id=element_id)

    def text(self) -> str:
        parts: list[str] = []
        for child in self.children:
            parts.append(child if isinstance(child, str) else child.text())
        return "".join(parts)

    def words(self) -> str:
        """The text with whitespace runs collapsed, as a reader sees it."""
        return " ".join(self.text().split())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def page(client: TestClient, url: str, **params: Any) -> Node:
    response = client.get(url, params=params or None)
    assert response.status_code == 200, (url, response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("text/html")
    return parse_html(response.text)


def problem(response: httpx2.Response) -> str:
    """The message of a problem page (#problem), as text."""
    return parse_html(response.text).by_id("problem").words()


def row_ids(doc: Node) -> list[int]:
    return [int(tr.attrs["data-id"]) for tr in doc.by_id("jobs").find_all("tr", data_id=True)]


def cells(row: Node) -> list[str]:
    return [td.words() for td in row.find_all("td")]


def moment(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def dd_after(doc: Node, label: str) -> str:
    """The text of the <dd> that follows the <dt> holding `label` in the first fact list that has it."""
    for dl in doc.find_all("dl"):
        items = [c for c in dl.children if isinstance(c, Node)]
        for dt, dd in itertools.pairwise(items):
            if dt.tag == "dt" and dt.words() == label and dd.tag == "dd":
                return dd.words()
    raise AssertionError(f"no <dt>{label}</dt> on the page")


def csrf(client: TestClient) -> str:
    """The CSRF token the dashboard set as a cookie (a first GET sets it)."""
    token = client.cookies.get("pgtasks_csrf")
    assert token, "no CSRF cookie: GET a page first"
    return str(token)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- database views for the assertions --------------------------------------------------------------


def job_rows(conn: psycopg.Connection[Any], schema: str) -> dict[int, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f'SELECT *, state::text AS state FROM "{schema}".jobs ORDER BY id')
        return {int(r["id"]): r for r in cur.fetchall()}


def states(conn: psycopg.Connection[Any], schema: str) -> dict[int, str]:
    return {i: str(r["state"]) for i, r in job_rows(conn, schema).items()}


def ids_where(conn: psycopg.Connection[Any], schema: str, where: str, params: tuple[Any, ...] = ()) -> list[int]:
    """Job ids newest first, as the jobs page lists them."""
    rows = conn.execute(f'SELECT id FROM "{schema}".jobs WHERE {where} ORDER BY id DESC', params).fetchall()
    return [int(r[0]) for r in rows]


def paused_queues(conn: psycopg.Connection[Any], schema: str) -> dict[str, datetime | None]:
    rows = conn.execute(f'SELECT name, paused_at FROM "{schema}".queues ORDER BY name').fetchall()
    return {str(r[0]): r[1] for r in rows}


def queue_rows(conn: psycopg.Connection[Any], schema: str) -> tuple[tuple[Any, ...], ...]:
    """The queues table as the actions change it: pauses and limits."""
    return tuple(conn.execute(f'SELECT name, paused_at, concurrency, rate, burst FROM "{schema}".queues '
                              "ORDER BY name").fetchall())


def snapshot(conn: psycopg.Connection[Any], schema: str) -> tuple[Any, ...]:
    """Everything an action could change: every job row and the queues table."""
    jobs = [(r["id"], r["state"], r["run_at"], r["cancel_requested_at"], r["attempt"], r["max_attempts"])
            for r in job_rows(conn, schema).values()]
    return tuple(jobs), queue_rows(conn, schema)


# -- the module's world: jobs in every state, a failure with tracebacks, progress, fires, a live worker ---


@dataclass
class World:
    app: App
    schema: str
    conn: psycopg.Connection[Any]
    ids: dict[str, int]
    ok_ids: dict[int, int]  # n -> job id
    tags: dict[int, str]  # n -> tag
    batch_a: list[int]  # enqueued before `first_boundary`
    batch_b: list[int]  # between the two boundaries
    first_boundary: datetime
    second_boundary: datetime
    holder: str  # the live worker that runs the "hold" job (and leads)
    drainer: str  # the burst worker that ran everything else


def _tag(n: int) -> str:
    if n == 7:
        return "50%_off"  # a LIKE wildcard in the data: the search must match it literally
    return "blue" if n % 2 == 0 else "red"


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    schema = f"pgt_{uuid.uuid4().hex[:12]}"
    app = App(database_url, schema=schema)
    app.migrate()
    conn = psycopg.connect(database_url, autocommit=True)

    @app.task(name="ok")
    def ok(n: int, tag: str) -> dict[str, int]:
        return {"n": n, "double": 2 * n}

    @app.task(name="flaky", retry=Fixed(0), max_attempts=3)
    def flaky(key: str) -> str:
        if current_job().attempt == 1:
            raise RuntimeError(f"first attempt of {key} fails")
        return "second time lucky"

    @app.task(name="boom", queue="mail", max_attempts=2, retry=Fixed(0))
    def boom(payload: str) -> None:
        raise ValueError(ERROR_HTML)

    @app.task(name="patient", retry=Fixed(3600), max_attempts=3)
    def patient() -> None:
        raise LookupError("not yet")

    @app.task(name="progress")
    def progress(total: int) -> str:
        current_job().set_progress(3, total, message="three done", meta={"file": "a.csv"})
        return "done"

    @app.task(name="later")
    def later() -> None: ...

    @app.task(name="idle", queue="idle")
    def idle(n: int) -> None: ...

    @app.periodic(cron="0 9 * * *", timezone="Europe/Paris", overlap=False, catch_up="skip", name="daily")
    @app.task(name="tick", queue="idle")
    def tick() -> None: ...

    def clock() -> datetime:
        value = conn.execute("SELECT clock_timestamp()").fetchone()
        assert value is not None
        result: datetime = value[0]
        return result

    tags = {n: _tag(n) for n in range(OK_JOBS)}
    first = ok.delay_many([(n, tags[n]) for n in range(20)])
    first_boundary = clock()
    second = ok.delay_many([(n, tags[n]) for n in range(20, OK_JOBS)])
    second_boundary = clock()
    ids = {"flaky": flaky.delay("k1").id, "boom": boom.delay(SCRIPT).id, "patient": patient.delay().id,
           "progress": progress.delay(10).id, "later": later.apply_async(countdown=3600).id,
           "available": idle.delay(1).id, "cancelled": idle.delay(2).id}
    with app.connect() as own:
        app.store.job_cancel_many(own, [ids["cancelled"]], reason="not needed", control=control_channel(schema))
    drainer = drain(app, queues=["default", "mail"], listen=False).worker_id

    # A daily 09:00 Paris schedule (08:00 UTC in January): first seen, on time, skipped for overlap
    # (its first job waits in the unserved "idle" queue), then three days missed with catch_up="skip".
    seen = datetime(2024, 1, 1, 7, 0, tzinfo=UTC)

    async def fire(pool: Any) -> None:
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10))
        for now in (seen, seen.replace(hour=8, second=5), seen.replace(day=2, hour=8, second=5),
                    seen.replace(day=5, hour=12)):
            await scheduler.tick(now=now)

    run_with_pool(app, fire)
    row = conn.execute(f'SELECT job_id FROM "{schema}".periodic_fires WHERE outcome = %s', ("enqueued",)).fetchone()
    assert row is not None
    ids["tick"] = int(row[0])

    # The live worker: another App on the schema (so its leader never runs this App's schedule),
    # holding one job running until the module ends; it keeps the 2024 fire records.
    holder_app = App(database_url, schema=schema)
    release = threading.Event()

    @holder_app.task(name="hold", queue="slow")
    def hold() -> None:
        release.wait(120)

    ids["running"] = hold.delay().id
    try:
        with worker_thread(holder_app, queues=["slow"], concurrency=2, poll_interval=0.1,
                           retention=Retention(periodic_fires=None)) as holder:
            wait_for(lambda: states(conn, schema)[ids["running"]] == "running" and is_leader(holder))
            yield World(app, schema, conn, ids, {n: ref.id for n, ref in enumerate([*first, *second])}, tags,
                        [r.id for r in first], [r.id for r in second], first_boundary, second_boundary,
                        holder.worker_id, drainer)
            release.set()
    finally:
        release.set()
        holder_app.close()
        app.close()
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(asgi_app(world.app)) as test_client:
        yield test_client


# -- pages ------------------------------------------------------------------------------------------


def test_overview_counts_every_state_and_charts_the_last_hour(world: World, client: TestClient) -> None:
    doc = page(client, "/")
    by_state = dict(world.conn.execute(
        f'SELECT state::text, count(*) FROM "{world.schema}".jobs GROUP BY state').fetchall())
    assert {"running": 1, "retryable": 1, "scheduled": 1, "discarded": 1, "cancelled": 1}.items() <= by_state.items()
    for state in ("available", "scheduled", "running", "retryable", "completed", "cancelled", "discarded"):
        shown = doc.one("span", cls="value", data_state=state).words()
        assert shown == str(by_state.get(state, 0)), (state, shown)

    # Completed: every ok job, flaky and progress. Retried: the first attempts of flaky, boom and
    # patient (boom's second attempt discarded it, which is not a retry).
    completed = OK_JOBS + 2
    assert by_state["completed"] == completed
    charts = json.loads(doc.by_id("chart-data").text())
    hour, day = charts["hour"], charts["day"]
    assert len(hour["t"]) == 61 and len(day["t"]) == 1441
    assert all(len(hour[k]) == 61 for k in ("completed", "retried", "discarded"))
    assert {k: sum(hour[k]) for k in ("completed", "retried", "discarded")} == {
        "completed": completed, "retried": 3, "discarded": 1}
    assert {k: sum(day[k]) for k in ("completed", "retried", "discarded")} == {
        "completed": completed, "retried": 3, "discarded": 1}
    assert hour["t"] == sorted(hour["t"]) and hour["t"][1] - hour["t"][0] == 60
    assert f"{completed} completed · 3 retried · 1 discarded" in doc.find_all("div", cls="chart-box")[0].words()
    assert doc.by_id("chart-hour").attrs["data-series"] == "hour"
    assert doc.by_id("chart-day").attrs["data-series"] == "day"

    (durations,) = [cells(tr) for tr in doc.find_all("tr") if tr.find_all("a", href="/jobs?queue=default")]
    assert durations[:2] == ["default", str(completed)]
    assert all(re.fullmatch(r"\d+ ms|\d+\.\d s", cell) for cell in durations[2:]), durations  # wait, run p50/p95
    term = world.conn.execute(f'SELECT term FROM "{world.schema}".leader').fetchone()
    assert term is not None
    assert f"{world.holder}, term {term[0]}," in doc.by_id("leader").words()
    live = [li.words() for li in doc.one("ul", cls="workers").find_all("li")]
    assert live == [f"{world.holder} {socket.gethostname()} pid {os.getpid()} · 1/2 running · leader"]
    # The doctor's findings come later, from their own fragment.
    assert doc.one(hx_get="/fragments/doctor").attrs["hx-trigger"] == "load"


def test_doctor_fragment_shows_the_findings_that_are_not_ok(world: World, client: TestClient) -> None:
    doc = page(client, "/fragments/doctor")
    expected = {f.check for f in run_checks(world.app, DoctorOptions(pool_timeout=3.0)) if f.status != OK}
    shown = doc.by_id("doctor").find_all("div", cls="finding")
    # Each finding reads "<status> <check>: <message>", its status also its class.
    rendered = {d.words().split()[1].rstrip(":"): d for d in shown}
    assert set(rendered) == expected and len(shown) == len(expected)
    assert all(d.one("strong").words() in d.attrs["class"].split() for d in shown)
    assert "unserved_queues" in expected  # "idle" has jobs waiting and no worker serves it
    assert "'idle' (2 waiting)" in rendered["unserved_queues"].words()
    assert "every check is OK" not in doc.words()


def test_queues_page_shows_depth_by_state_lag_and_pause(world: World, client: TestClient) -> None:
    doc = page(client, "/queues")
    rows = {tr.attrs["data-queue"]: tr for tr in doc.by_id("queues").find_all("tr", data_queue=True)}
    assert {"default", "idle", "mail", "slow"} <= set(rows)
    depth = world.conn.execute(
        f"""SELECT queue, count(*) FILTER (WHERE state = 'available'), count(*) FILTER (WHERE state = 'scheduled'),
                   count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state = 'retryable')
            FROM "{world.schema}".jobs GROUP BY queue""").fetchall()
    for queue, available, scheduled, running, retryable in depth:
        shown = cells(rows[queue])
        assert shown[0] == queue
        assert shown[1:5] == [str(available), str(scheduled), str(running), str(retryable)], (queue, shown)
        assert rows[queue].one("td", cls="paused").words() == "no"
        assert rows[queue].one("button").words() == "Pause"
    assert cells(rows["idle"])[1] == "2" and cells(rows["slow"])[3] == "1"
    # idle's oldest job has waited since the module began: a lag, not "0 ms".
    assert cells(rows["idle"])[5] != "0 ms"


def test_jobs_page_lists_newest_first_with_filters_and_actions(world: World, client: TestClient) -> None:
    doc = page(client, "/jobs")
    every = ids_where(world.conn, world.schema, "true")
    assert len(every) > 50
    assert row_ids(doc) == every[:50]
    boom = doc.by_id("jobs").one("tr", data_id=str(world.ids["boom"]))
    assert boom.attrs["data-state"] == "discarded"
    shown = cells(boom)
    assert shown[2:6] == ["boom", "mail", "discarded", "2/2"]
    assert shown[-1] == f"ValueError: {ERROR_HTML}"
    assert doc.by_id("older").attrs["href"] == f"/jobs?before={every[49]}"
    assert doc.by_id("select-all").attrs["type"] == "checkbox"
    for action in ("retry", "cancel", "delete"):
        assert doc.one("button", cls=f"act-{action}").attrs["value"] == action
        assert doc.one("button", cls=f"act-all-{action}").attrs["value"] == action
    assert doc.by_id("filters").attrs["action"] == "/jobs"
    assert doc.by_id("apply-filters").attrs["type"] == "submit"
    assert doc.by_id("live").attrs["hx-get"] == "/jobs"


def test_job_page_of_a_discarded_job_shows_args_every_error_with_traceback_worker_and_timings(
        world: World, client: TestClient) -> None:
    job_id = world.ids["boom"]
    row = job_rows(world.conn, world.schema)[job_id]
    doc = page(client, f"/jobs/{job_id}")
    assert doc.by_id("job-state").words() == "discarded"
    assert json.loads(doc.by_id("args").text()) == {"payload": SCRIPT}
    assert doc.by_id("result").words() == "none stored"
    attempts = doc.find_all("details", cls="attempt")
    assert len(attempts) == 2 == len(row["errors"])
    for number, (details, stored) in enumerate(zip(attempts, row["errors"], strict=True), start=1):
        summary = details.one("summary").words()
        assert summary.startswith(f"attempt {number} · ") and summary.endswith(f"ValueError: {ERROR_HTML}")
        trace = details.one("pre", cls="traceback").text()
        assert trace == stored["traceback"]
        assert trace.startswith("Traceback (most recent call last)") and "raise ValueError(ERROR_HTML)" in trace
    assert "open" in attempts[-1].attrs and "open" not in attempts[0].attrs
    assert dd_after(doc, "task") == "boom" and dd_after(doc, "queue") == "mail"
    assert dd_after(doc, "attempt") == "2 of 2 (claimed 2 times)"
    assert dd_after(doc, "worker") == world.drainer
    assert dd_after(doc, "enqueued").startswith(moment(row["created_at"]))
    assert dd_after(doc, "due") == moment(row["run_at"])
    assert dd_after(doc, "started").startswith(moment(row["attempted_at"]) + " · waited ")
    assert dd_after(doc, "finished").startswith(moment(row["finalized_at"]) + " · ran ")
    assert {f.attrs["action"] for f in doc.find_all("form", method="post")} == {
        f"/jobs/{job_id}/retry", f"/jobs/{job_id}/cancel", f"/jobs/{job_id}/delete"}


def test_job_page_shows_progress_result_and_a_retried_attempt(world: World, client: TestClient) -> None:
    doc = page(client, f"/jobs/{world.ids['progress']}")
    bar = doc.by_id("progress")
    assert bar.one("progress").attrs == {"value": "3", "max": "10"}
    assert "3 / 10" in bar.words() and "three done" in bar.words()
    assert any(json.loads(pre.text()) == {"file": "a.csv"} for pre in doc.find_all("pre") if "id" not in pre.attrs)
    assert json.loads(doc.by_id("result").text()) == "done"
    assert doc.one("p", cls="empty").words() == "none"  # no failed attempt

    doc = page(client, f"/jobs/{world.ids['flaky']}")
    assert doc.by_id("job-state").words() == "completed"
    assert json.loads(doc.by_id("result").text()) == "second time lucky"
    (details,) = doc.find_all("details", cls="attempt")
    assert details.one("summary").words().endswith("RuntimeError: first attempt of k1 fails")
    assert "raise RuntimeError(" in details.one("pre", cls="traceback").text()
    assert dd_after(doc, "attempt") == "2 of 3 (claimed 2 times)"

    n = 12
    doc = page(client, f"/jobs/{world.ok_ids[n]}")
    assert json.loads(doc.by_id("args").text()) == {"n": n, "tag": "blue"}
    assert json.loads(doc.by_id("result").text()) == {"n": n, "double": 2 * n}

    doc = page(client, f"/jobs/{world.ids['running']}")
    assert doc.by_id("job-state").words() == "running"
    assert dd_after(doc, "worker") == world.holder
    assert dd_after(doc, "finished") == NOTHING


def test_job_page_of_an_unknown_or_malformed_id_is_404(client: TestClient) -> None:
    response = client.get("/jobs/987654321")
    assert response.status_code == 404 and "no job 987654321" in problem(response)
    response = client.get("/jobs/abc")
    assert response.status_code == 404 and "'abc' is not a job id" in problem(response)
    for unusable in ("0", "\u00b2", str(2**63)):  # "²" is a digit to str.isdigit(); 2**63 is past bigint
        response = client.get(f"/jobs/{unusable}")
        assert response.status_code == 404 and f"{unusable!r} is not a job id" in problem(response)


def test_workers_page_shows_the_live_worker_with_its_running_job(world: World, client: TestClient) -> None:
    doc = page(client, "/workers")
    (row,) = doc.by_id("workers").find_all("tr", data_worker=True)
    assert row.attrs["data-worker"] == world.holder
    shown = cells(row)
    assert shown[:4] == [world.holder, socket.gethostname(), str(os.getpid()), "slow"]
    assert shown[4].startswith(f"1/2 {world.ids['running']} hold · ")
    assert row.one("a").attrs["href"] == f"/jobs/{world.ids['running']}"
    assert shown[7] == "leader"


def test_periodic_page_shows_spec_time_zone_next_fire_and_latest_fires(world: World, client: TestClient) -> None:
    doc = page(client, "/periodic")
    section = doc.one("section", data_schedule="daily")
    assert dd_after(section, "task") == "tick"
    assert dd_after(section, "schedule") == "cron '0 9 * * *' Europe/Paris"
    assert dd_after(section, "time zone") == "Europe/Paris"
    assert dd_after(section, "catch-up") == "skip"
    # The cursor is the last recorded tick, 2024-01-05 09:00 Paris; the next is the 6th, 08:00 UTC.
    assert dd_after(section, "next fire").startswith("2024-01-06 08:00:00 (")
    assert dd_after(section, "next fire").endswith("· due")
    fires = [cells(tr) for tr in section.one("table", cls="fires").find_all("tbody")[0].find_all("tr")]
    assert [f[:3] for f in fires] == [
        ["2024-01-05 08:00:00", "skipped (catch-up: 3 older ticks folded in)", ""],
        ["2024-01-02 08:00:00", "skipped (overlap: the previous run was unfinished)", ""],
        ["2024-01-01 08:00:00", "enqueued", f"{world.ids['tick']} available"],
        ["2024-01-01 07:00:00", "registered", ""],
    ]


# -- filters ----------------------------------------------------------------------------------------


def test_filter_by_states_queue_and_task(world: World, client: TestClient) -> None:
    conn, schema = world.conn, world.schema
    doc = page(client, "/jobs", state=["completed", "discarded"], limit="200")
    assert row_ids(doc) == ids_where(conn, schema, "state IN ('completed', 'discarded')")
    shown = {tr.attrs["data-state"] for tr in doc.by_id("jobs").find_all("tr", data_id=True)}
    assert shown == {"completed", "discarded"}
    checked = {i.attrs["value"] for i in doc.by_id("filters").find_all("input", type="checkbox", checked=True)}
    assert checked == {"completed", "discarded"}

    doc = page(client, "/jobs", queue="idle", limit="200")
    assert row_ids(doc) == ids_where(conn, schema, "queue = 'idle'") == sorted(
        [world.ids["available"], world.ids["cancelled"], world.ids["tick"]], reverse=True)
    assert [o.attrs["value"] for o in doc.by_id("filters").find_all("option", selected=True)] == ["idle"]

    doc = page(client, "/jobs", task=["flaky", "boom"], limit="200")
    assert row_ids(doc) == sorted([world.ids["flaky"], world.ids["boom"]], reverse=True)

    doc = page(client, "/jobs", state="completed", queue="default", task="ok", limit="200")
    assert row_ids(doc) == sorted(world.ok_ids.values(), reverse=True)

    doc = page(client, "/jobs", state="running", queue="mail")
    assert row_ids(doc) == []
    assert doc.by_id("jobs").one("td", cls="empty").words() == "no job matches"


def test_filter_by_time_range(world: World, client: TestClient) -> None:
    first, second = world.first_boundary.isoformat(), world.second_boundary.isoformat()
    assert row_ids(page(client, "/jobs", to=first, limit="200")) == sorted(world.batch_a, reverse=True)
    assert row_ids(page(client, "/jobs", **{"from": first, "to": second, "limit": "200"})) == sorted(
        world.batch_b, reverse=True)
    after = row_ids(page(client, "/jobs", **{"from": second, "limit": "200"}))
    assert after == ids_where(world.conn, world.schema, "id > %s", (max(world.batch_b),))
    # A time without an offset is UTC.
    naive = world.first_boundary.astimezone(UTC).replace(tzinfo=None).isoformat()
    assert row_ids(page(client, "/jobs", to=naive, limit="200")) == sorted(world.batch_a, reverse=True)


def test_search_in_arguments_as_text_and_as_json_containment(world: World, client: TestClient) -> None:
    blue = sorted((world.ok_ids[n] for n, t in world.tags.items() if t == "blue"), reverse=True)
    red = sorted((world.ok_ids[n] for n, t in world.tags.items() if t == "red"), reverse=True)
    assert row_ids(page(client, "/jobs", q="blue", limit="200")) == blue
    assert row_ids(page(client, "/jobs", q="BLUE", limit="200")) == blue  # case-insensitive
    assert row_ids(page(client, "/jobs", q='{"tag": "red"}', limit="200")) == red
    assert row_ids(page(client, "/jobs", q='{"tag": "blue", "n": 4}')) == [world.ok_ids[4]]
    assert row_ids(page(client, "/jobs", q=json.dumps({"payload": SCRIPT}))) == [world.ids["boom"]]
    # LIKE's wildcards are searched for literally: "%_" is in one job's arguments only.
    assert row_ids(page(client, "/jobs", q="%_", limit="200")) == [world.ok_ids[7]]
    assert row_ids(page(client, "/jobs", q="50%_off")) == [world.ok_ids[7]]
    # JSON that is not an object is searched as text.
    assert row_ids(page(client, "/jobs", q="[1", limit="200")) == []
    doc = page(client, "/jobs", q="blue", state="completed", limit="20")
    assert row_ids(doc) == blue[:20]
    assert doc.by_id("filters").one("input", type="search").attrs["value"] == "blue"


def test_page_size(world: World, client: TestClient) -> None:
    every = ids_where(world.conn, world.schema, "true")
    for size in (20, 50, 100, 200):
        doc = page(client, "/jobs", limit=str(size))
        assert row_ids(doc) == every[:size]
        assert doc.by_id("filters").one("input", name="limit").attrs["value"] == str(size)
    assert not page(client, "/jobs", limit="100").find_all(id="older")


@pytest.mark.parametrize("params, where", [
    ({}, "true"),
    ({"state": "completed"}, "state = 'completed'"),
    ({"q": "red"}, "args::text ILIKE '%%red%%'"),
], ids=["all", "completed", "search"])
def test_keyset_pagination_walks_every_page_once(world: World, client: TestClient, params: dict[str, str],
                                                 where: str) -> None:
    expected = ids_where(world.conn, world.schema, where)
    assert len(expected) > 20
    seen: list[int] = []
    url: str | None = "/jobs?" + str(httpx2.QueryParams({**params, "limit": "20"}))
    pages = 0
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200
        doc = parse_html(response.text)
        ids = row_ids(doc)
        assert 0 < len(ids) <= 20
        seen.extend(ids)
        pages += 1
        older = doc.find_all("a", id="older")
        url = older[0].attrs["href"] if older else None
        if url is not None:
            assert f"before={ids[-1]}" in url and "limit=20" in url
            for key, value in params.items():
                assert httpx2.URL(url).params.get(key) == value  # the filter stays in the link
    assert pages == -(-len(expected) // 20)
    assert all(a > b for a, b in itertools.pairwise(seen)), "ids must strictly decrease"
    assert seen == expected  # no duplicate, none missing


@pytest.mark.parametrize("params, message", [
    ({"state": "bogus"}, "state='bogus' is not a job state"),
    ({"state": SCRIPT}, f"state={SCRIPT!r} is not a job state"),
    ({"limit": "7"}, "limit=7: use one of 20, 50, 100, 200"),
    ({"limit": "abc"}, "limit='abc' is not a whole number"),
    ({"limit": "0"}, "limit=0 must be at least 1"),
    ({"from": "yesterday"}, "from='yesterday' is not a time"),
    ({"to": "2024-13-01"}, "to='2024-13-01' is not a time"),
    ({"from": "2024-02-01", "to": "2024-01-01"}, "from=2024-02-01T00:00:00+00:00 is not before to=2024-01-01"),
    ({"before": "0"}, "before=0 must be at least 1"),
    ({"before": "x1"}, "before='x1' is not a whole number"),
    ({"q": ["a", "b"]}, "q: given 2 times ('a', 'b')"),
    # Values PostgreSQL itself would refuse: caught before the query, not a 500.
    ({"before": str(2**64)}, f"before={2**64} must be at most {2**63 - 1}"),
    ({"q": "a\x00b"}, "q='a\\x00b': PostgreSQL text cannot hold a NUL character"),
    ({"queue": "\x00"}, "queue='\\x00': PostgreSQL text cannot hold a NUL character"),
    ({"task": "t\x00"}, "task='t\\x00': PostgreSQL text cannot hold a NUL character"),
    ({"q": '{"a": "\\u0000"}'}, "a \\u0000 cannot be in any job's arguments"),
])
def test_bad_filter_values_are_400_naming_parameter_and_value(client: TestClient, params: dict[str, Any],
                                                            message: str) -> None:
    response = client.get("/jobs", params=params)
    assert response.status_code == 400
    assert message in problem(response)
    assert SCRIPT not in response.text


# -- escaping ---------------------------------------------------------------------------------------


def test_arguments_and_errors_holding_html_render_as_text(world: World, client: TestClient) -> None:
    for url in (f"/jobs/{world.ids['boom']}", "/jobs?task=boom", "/jobs?" + str(httpx2.QueryParams({"q": SCRIPT}))):
        text = client.get(url).text
        assert SCRIPT not in text and "<b>bold</b>" not in text, url
        assert SCRIPT_ESCAPED in text, url
    detail = client.get(f"/jobs/{world.ids['boom']}").text
    assert ERROR_ESCAPED in detail
    listing = client.get("/jobs?task=boom").text
    assert ERROR_ESCAPED in listing
    # The search box echoes the search as an attribute value, escaped too.
    searched = client.get("/jobs", params={"q": f'"><img src=x onerror=alert(1)>{SCRIPT}'}).text
    assert "<img src=x" not in searched and SCRIPT not in searched


# -- actions (each on a fresh schema) ---------------------------------------------------------------


@dataclass
class Jobs:
    """A small set of jobs for an action test, by what they are."""

    completed: list[int]
    discarded: list[int]
    available: list[int]
    scheduled: list[int]
    running: list[int]

    @property
    def every(self) -> list[int]:
        return sorted(self.completed + self.discarded + self.available + self.scheduled + self.running)


def make_jobs(app: App) -> Jobs:
    """Jobs in five states: run by a burst worker, left waiting, or claimed through the store."""

    @app.task(name="fine")
    def fine(n: int) -> int:
        return n

    @app.task(name="broken", max_attempts=1)
    def broken(n: int) -> None:
        raise RuntimeError(f"broken {n}")

    @app.task(name="waiting", queue="idle")
    def waiting(n: int) -> None: ...

    @app.task(name="held", queue="hold")
    def held(n: int) -> None: ...

    completed = [r.id for r in fine.delay_many([(n,) for n in range(3)])]
    discarded = [r.id for r in broken.delay_many([(n,) for n in range(2)])]
    drain(app, queues=["default"], listen=False)
    available = [r.id for r in waiting.delay_many([(n,) for n in range(2)])]
    scheduled = [waiting.apply_async((9,), countdown=3600).id]
    running = [r.id for r in held.delay_many([(n,) for n in range(2)])]

    async def claim() -> None:
        conn = await app.aconnect()
        async with conn:
            claimed = await app.store.ajob_fetch_available(conn, queues=["hold"], limit=10, worker_id=HOLDER)
        assert sorted(j.id for j in claimed) == running

    asyncio.run(claim())
    return Jobs(completed, discarded, available, scheduled, running)


@pytest.fixture
def acting(app: App) -> Iterator[tuple[TestClient, Jobs]]:
    jobs = make_jobs(app)
    with TestClient(asgi_app(app)) as test_client:
        page(test_client, "/jobs")  # sets the CSRF cookie
        yield test_client, jobs


def bulk(client: TestClient, action: str, *, scope: str, ids: Sequence[int] = (), confirm: int | None = None,
         query: dict[str, Any] | None = None) -> httpx2.Response:
    form: dict[str, Any] = {"csrf": csrf(client), "action": action, "scope": scope, "ids": [str(i) for i in ids]}
    if confirm is not None:
        form["confirm"] = str(confirm)
    return client.post("/jobs/action", params=query, data=form)


def confirmation(response: httpx2.Response) -> tuple[str, int, Node]:
    """The confirmation's sentence, the count it asks about, and its form."""
    assert response.status_code == 200, response.text[:2000]
    doc = parse_html(response.text)
    text = doc.by_id("confirm-text")
    count = int(text.find_all("strong")[0].words().replace(",", ""))
    form = doc.by_id("action-panel").one("form")
    assert form.one("input", name="confirm").attrs["value"] == str(count)
    assert doc.by_id("confirm-button").words().endswith(f" {count}")
    return text.words(), count, form


def result_of(response: httpx2.Response) -> str:
    assert response.status_code == 200, response.text[:2000]
    return parse_html(response.text).by_id("action-result").words()


def test_bulk_retry_of_a_selection(app: App, conn: psycopg.Connection[Any],
                                   acting: tuple[TestClient, Jobs]) -> None:
    client, jobs = acting
    chosen = jobs.discarded + jobs.completed[:1] + jobs.running[:1]
    before = states(conn, app.schema)
    text, count, form = confirmation(bulk(client, "retry", scope="selection", ids=chosen))
    assert count == len(chosen) == 4 and text.startswith("Retry 4 jobs selected?")
    assert sorted(int(i.attrs["value"]) for i in form.find_all("input", name="ids")) == sorted(chosen)
    assert states(conn, app.schema) == before  # nothing happens before the confirmation

    assert result_of(bulk(client, "retry", scope="selection", ids=chosen, confirm=count)) == (
        "3 jobs retried; 1 left as they were (not in a state this applies to, or held by a worker at that "
        "moment)")
    after = states(conn, app.schema)
    assert all(after[i] == "available" for i in jobs.discarded + jobs.completed[:1])
    assert after[jobs.running[0]] == "running"
    assert {i: s for i, s in after.items() if i not in chosen} == {i: s for i, s in before.items() if i not in chosen}


def test_bulk_retry_of_everything_matching_a_filter(app: App, conn: psycopg.Connection[Any],
                                                    acting: tuple[TestClient, Jobs]) -> None:
    client, jobs = acting
    query = {"state": ["discarded", "completed"], "task": "broken"}
    text, count, form = confirmation(bulk(client, "retry", scope="filter", query=query))
    assert count == len(jobs.discarded) == 2
    assert text == "Retry 2 jobs matching state=discarded&state=completed&task=broken?"
    assert form.attrs["action"] == "/jobs/action?state=discarded&state=completed&task=broken"
    assert result_of(bulk(client, "retry", scope="filter", query=query, confirm=count)) == "2 jobs retried"
    after = states(conn, app.schema)
    assert [after[i] for i in jobs.discarded] == ["available", "available"]
    assert all(after[i] == "completed" for i in jobs.completed)


def test_confirming_a_filter_action_whose_match_count_moved_asks_again_and_changes_nothing(
        app: App, conn: psycopg.Connection[Any], acting: tuple[TestClient, Jobs]) -> None:
    client, _ = acting
    query = {"state": ["discarded", "completed"], "task": "broken"}
    _, count, _ = confirmation(bulk(client, "retry", scope="filter", query=query))
    assert count == 2
    before = states(conn, app.schema)
    # The user confirms a number the filter no longer matches (say, more jobs failed since).
    again = bulk(client, "retry", scope="filter", query=query, confirm=count + 3)
    _, recount, _ = confirmation(again)
    assert recount == 2
    assert parse_html(again.text).by_id("count-changed").words() == (
        "The filter matched 5 jobs when you asked; it matches 2 now.")
    assert states(conn, app.schema) == before
    assert result_of(bulk(client, "retry", scope="filter", query=query, confirm=recount)) == "2 jobs retried"


def test_bulk_cancel_asks_running_jobs_to_stop_and_cancels_waiting_ones(
        app: App, conn: psycopg.Connection[Any], acting: tuple[TestClient, Jobs]) -> None:
    client, jobs = acting
    chosen = jobs.available[:1] + jobs.running[:1] + jobs.completed[:1]
    text, count, _ = confirmation(bulk(client, "cancel", scope="selection", ids=chosen))
    assert count == 3 and "Running jobs are asked to stop and end cancelled." in text
    assert result_of(bulk(client, "cancel", scope="selection", ids=chosen, confirm=count)) == (
        "2 jobs cancelled or asked to cancel; 1 left as they were (not in a state this applies to, or held by a "
        "worker at that moment)")
    rows = job_rows(conn, app.schema)
    assert rows[jobs.available[0]]["state"] == "cancelled"
    assert rows[jobs.running[0]]["state"] == "running" and rows[jobs.running[0]]["cancel_requested_at"] is not None
    assert rows[jobs.running[1]]["cancel_requested_at"] is None
    assert rows[jobs.completed[0]]["state"] == "completed"

    # Everything waiting in one queue, by filter.
    query = {"queue": "idle"}
    _, count, _ = confirmation(bulk(client, "cancel", scope="filter", query=query))
    assert count == 3  # the cancelled one still matches; the other available and the scheduled one
    assert result_of(bulk(client, "cancel", scope="filter", query=query, confirm=count)) == (
        "2 jobs cancelled or asked to cancel; 1 left as they were (not in a state this applies to, or held by a "
        "worker at that moment)")
    after = states(conn, app.schema)
    assert {after[i] for i in jobs.available + jobs.scheduled} == {"cancelled"}


def test_bulk_delete_never_deletes_running_jobs(app: App, conn: psycopg.Connection[Any],
                                                acting: tuple[TestClient, Jobs]) -> None:
    client, jobs = acting
    chosen = jobs.completed[:2] + jobs.running[:1]
    text, count, _ = confirmation(bulk(client, "delete", scope="selection", ids=chosen))
    assert count == 3 and "running jobs are never deleted" in text
    assert result_of(bulk(client, "delete", scope="selection", ids=chosen, confirm=count)) == (
        "2 jobs deleted; 1 left as they were (not in a state this applies to, or held by a worker at that "
        "moment)")
    left = states(conn, app.schema)
    assert not set(jobs.completed[:2]) & set(left) and left[jobs.running[0]] == "running"

    # Everything: the confirmation says it has no filter, and running jobs survive it.
    text, count, _ = confirmation(bulk(client, "delete", scope="filter"))
    assert count == len(left) and "matching no filter: every job?" in text
    assert result_of(bulk(client, "delete", scope="filter", confirm=count)) == (
        f"{count - 2} jobs deleted; 2 left as they were (not in a state this applies to, or held by a worker at that "
        "moment)")
    assert states(conn, app.schema) == {i: "running" for i in jobs.running}


def test_bulk_action_input_errors(acting: tuple[TestClient, Jobs]) -> None:
    client, jobs = acting
    response = bulk(client, "retry", scope="selection")
    assert response.status_code == 400 and "no jobs selected" in problem(response)
    response = bulk(client, "explode", scope="selection", ids=jobs.completed)
    assert response.status_code == 400 and "action='explode'" in problem(response)
    response = bulk(client, "retry", scope="everything", ids=jobs.completed, confirm=1)
    assert response.status_code == 400 and "scope='everything'" in problem(response)
    response = client.post("/jobs/action", data={"csrf": csrf(client), "action": "retry", "ids": "x"})
    assert response.status_code == 400 and "id='x' is not a job id" in problem(response)
    response = bulk(client, "retry", scope="filter", query={"state": "nope"})
    assert response.status_code == 400 and "state='nope'" in problem(response)
    response = bulk(client, "retry", scope="selection", ids=[2**63], confirm=1)
    assert response.status_code == 400 and f"id={2**63} is not a job id" in problem(response)
    response = client.post(f"/jobs/{2**63}/retry", data={"csrf": csrf(client)})
    assert response.status_code == 404


def test_single_job_actions(app: App, conn: psycopg.Connection[Any], acting: tuple[TestClient, Jobs]) -> None:
    client, jobs = acting
    token = {"csrf": csrf(client)}
    discarded = jobs.discarded[0]
    response = client.post(f"/jobs/{discarded}/retry", data=token, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/jobs/{discarded}"
    assert states(conn, app.schema)[discarded] == "available"
    assert page(client, f"/jobs/{discarded}").by_id("job-state").words() == "available"

    response = client.post(f"/jobs/{jobs.available[0]}/cancel", data=token, follow_redirects=False)
    assert response.status_code == 303
    assert states(conn, app.schema)[jobs.available[0]] == "cancelled"

    running = jobs.running[0]
    assert client.post(f"/jobs/{running}/cancel", data=token, follow_redirects=False).status_code == 303
    row = job_rows(conn, app.schema)[running]
    assert row["state"] == "running" and row["cancel_requested_at"] is not None
    assert dd_after(page(client, f"/jobs/{running}"), "cancel requested") == moment(row["cancel_requested_at"])

    # Deleting a running job leaves it, and the redirect goes back to it.
    response = client.post(f"/jobs/{running}/delete", data=token, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/jobs/{running}"
    assert running in states(conn, app.schema)

    completed = jobs.completed[0]
    response = client.post(f"/jobs/{completed}/delete", data=token, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/jobs"
    assert completed not in states(conn, app.schema)

    # htmx asks for a client-side redirect instead of a 303.
    response = client.post(f"/jobs/{jobs.completed[1]}/retry", data=token, headers={"HX-Request": "true"},
                           follow_redirects=False)
    assert response.status_code == 204 and response.headers["hx-redirect"] == f"/jobs/{jobs.completed[1]}"
    assert states(conn, app.schema)[jobs.completed[1]] == "available"

    response = client.post(f"/jobs/{completed}/explode", data=token)
    assert response.status_code == 400 and "action='explode'" in problem(response)
    response = client.post("/jobs/abc/retry", data=token)
    assert response.status_code == 404


def test_queue_pause_and_resume(app: App, conn: psycopg.Connection[Any], acting: tuple[TestClient, Jobs]) -> None:
    client, _ = acting

    def idle_row() -> Node:
        return page(client, "/queues").by_id("queues").one("tr", data_queue="idle")

    assert idle_row().one("td", cls="paused").words() == "no"
    assert idle_row().one("form").attrs["action"] == "/queues/pause"
    response = client.post("/queues/pause", data={"csrf": csrf(client), "queue": "idle"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/queues"
    paused_at = paused_queues(conn, app.schema)["idle"]
    assert paused_at is not None
    row = idle_row()
    assert row.one("td", cls="paused").words() == f"since {moment(paused_at)}"
    assert row.one("form").attrs["action"] == "/queues/resume" and row.one("button").words() == "Resume"

    response = client.post("/queues/resume", data={"csrf": csrf(client), "queue": "idle"}, follow_redirects=False)
    assert response.status_code == 303
    assert paused_queues(conn, app.schema)["idle"] is None
    assert idle_row().one("td", cls="paused").words() == "no"

    # A queue no job uses yet can be paused ahead of time; a name that is not a queue cannot.
    assert client.post("/queues/pause", data={"csrf": csrf(client), "queue": "later/one"}).status_code == 200
    assert paused_queues(conn, app.schema)["later/one"] is not None
    response = client.post("/queues/pause", data={"csrf": csrf(client), "queue": ""})
    assert response.status_code == 400
    response = client.post("/queues/stop", data={"csrf": csrf(client), "queue": "idle"})
    assert response.status_code == 404 and "no queue action 'stop'" in problem(response)


# -- permissions ------------------------------------------------------------------------------------


def every_post(client: TestClient, jobs: Jobs, token: str) -> list[httpx2.Response]:
    """Every state-changing request the dashboard takes, each with the given CSRF token."""
    victim = jobs.discarded[0]
    responses = [
        client.post("/queues/pause", data={"csrf": token, "queue": "idle"}),
        client.post("/queues/resume", data={"csrf": token, "queue": "idle"}),
        client.post("/queues/limit", data={"csrf": token, "queue": "idle", "concurrency": "1", "rate": "1/s"}),
    ]
    for action in ("retry", "cancel", "delete"):
        responses.append(client.post(f"/jobs/{victim}/{action}", data={"csrf": token}))
        responses.append(client.post("/jobs/action", data={"csrf": token, "action": action, "scope": "selection",
                                                           "ids": [str(i) for i in jobs.every], "confirm": "9"}))
        responses.append(client.post("/jobs/action", data={"csrf": token, "action": action, "scope": "filter",
                                                           "confirm": "9"}))
    return responses


def assert_no_actions(doc: Node) -> None:
    for form in doc.find_all("form", method="post"):
        assert not form.find_all("button") and not form.find_all("input", type="submit"), form.attrs
    # The one button left is the filter form's (a GET).
    assert [b.attrs.get("id") for b in doc.find_all("button")] in ([], ["apply-filters"])
    for action in ("retry", "cancel", "delete"):
        assert not doc.find_all(cls=f"act-{action}") and not doc.find_all(cls=f"act-all-{action}")
    assert not doc.find_all(id="select-all") and not doc.find_all("input", name="ids")


@pytest.mark.parametrize("how", ["read_only", "authorize_read", "basic_read"])
def test_read_only_access_renders_pages_without_actions_and_refuses_every_post(
        app: App, conn: psycopg.Connection[Any], how: str) -> None:
    jobs = make_jobs(app)
    headers: dict[str, str] = {}
    if how == "read_only":
        dashboard = asgi_app(app, read_only=True)
    elif how == "authorize_read":
        dashboard = asgi_app(app, authorize=lambda request: "read")
    else:
        dashboard = asgi_app(app, authorize=basic_auth([Credential("admin", "s3cret", Access.FULL),
                                                        Credential("viewer", "look", Access.READ)]))
        headers = basic("viewer", "look")
    before = snapshot(conn, app.schema)
    with TestClient(dashboard, headers=headers) as client:
        for url in ("/", "/queues", "/jobs", f"/jobs/{jobs.discarded[0]}", "/workers", "/periodic",
                    "/fragments/doctor"):
            doc = page(client, url)
            assert_no_actions(doc)
            assert "read-only" in doc.one("header").words()
        assert row_ids(page(client, "/jobs")) == sorted(jobs.every, reverse=True)
        for response in every_post(client, jobs, csrf(client)):
            assert response.status_code == 403, response.request.url
            assert "read-only access" in problem(response)
    assert snapshot(conn, app.schema) == before


def test_authorize_false_refuses_everything(app: App) -> None:
    with TestClient(asgi_app(app, authorize=lambda request: False)) as client:
        for url in ("/", "/jobs", "/events", "/static/dashboard.css"):
            response = client.get(url)
            assert response.status_code == 403 and response.text == "not authorized for the pgtasks dashboard"
            assert "www-authenticate" not in response.headers
        assert client.post("/queues/pause", data={"queue": "idle"}).status_code == 403


def test_basic_auth(app: App, conn: psycopg.Connection[Any]) -> None:
    jobs = make_jobs(app)
    dashboard = asgi_app(app, authorize=basic_auth([Credential("admin", "s3cret", Access.FULL),
                                                    Credential("viewer", "look", Access.READ)]))
    with TestClient(dashboard) as client:
        for headers in ({}, basic("admin", "wrong"), basic("nobody", "s3cret"), basic("admin", ""),
                        {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}):
            response = client.get("/jobs", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == 'Basic realm="pgtasks", charset="UTF-8"'
        response = client.get("/jobs", headers=basic("admin", "s3cret"))
        assert response.status_code == 200
        assert parse_html(response.text).find_all(cls="act-retry")
        token = csrf(client)
        # The read credential sees the page but cannot act, even with a valid token.
        assert client.get("/jobs", headers=basic("viewer", "look")).status_code == 200
        response = client.post(f"/jobs/{jobs.discarded[0]}/retry", data={"csrf": token},
                               headers=basic("viewer", "look"))
        assert response.status_code == 403
        assert states(conn, app.schema)[jobs.discarded[0]] == "discarded"
        response = client.post(f"/jobs/{jobs.discarded[0]}/retry", data={"csrf": token},
                               headers=basic("admin", "s3cret"), follow_redirects=False)
        assert response.status_code == 303
        assert states(conn, app.schema)[jobs.discarded[0]] == "available"
    with pytest.raises(ConfigurationError, match="at least one Credential"):
        basic_auth([])


def test_csrf_missing_or_wrong_is_403_and_changes_nothing(app: App, conn: psycopg.Connection[Any],
                                                          acting: tuple[TestClient, Jobs]) -> None:
    client, jobs = acting
    before = snapshot(conn, app.schema)
    for token in ("", "x" * 43, csrf(client)[::-1]):
        for response in every_post(client, jobs, token):
            assert response.status_code == 403, (token, response.request.url)
            assert "missing or wrong CSRF token" in problem(response)
    # A request from another site is refused even with the right token.
    response = client.post("/queues/pause", data={"csrf": csrf(client), "queue": "idle"},
                           headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403 and "cross-site" in problem(response)
    # Without the cookie (a forged form from elsewhere) the field alone is not enough.
    with TestClient(asgi_app(app)) as stranger:
        response = stranger.post("/queues/pause", data={"csrf": csrf(client), "queue": "idle"})
        assert response.status_code == 403
    assert snapshot(conn, app.schema) == before
    # The header works in place of the form field.
    response = client.post("/queues/pause", data={"queue": "idle"}, headers={"X-CSRF-Token": csrf(client)},
                           follow_redirects=False)
    assert response.status_code == 303 and paused_queues(conn, app.schema)["idle"] is not None


def test_async_authorize_and_a_bad_authorize_result(app: App) -> None:
    async def authorize(request: Request) -> bool:
        await asyncio.sleep(0)
        return request.headers.get("x-team") == "ops"

    with TestClient(asgi_app(app, authorize=authorize)) as client:
        assert client.get("/queues", headers={"X-Team": "ops"}).status_code == 200
        assert client.get("/queues", headers={"X-Team": "dev"}).status_code == 403

    async def reads(request: Request) -> str:
        return "read"

    with TestClient(asgi_app(app, authorize=reads)) as client:  # type: ignore[arg-type]
        assert_no_actions(page(client, "/queues"))

    bad = asgi_app(app, authorize=lambda request: "yes")  # type: ignore[arg-type,return-value]
    with TestClient(bad) as client, pytest.raises(ConfigurationError,
                                                  match=r"authorize\(request\) returned 'yes': return True"):
        client.get("/")


# -- the audit log ----------------------------------------------------------------------------------


def test_each_action_logs_one_audit_line_with_who_what_and_how_many(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    jobs = make_jobs(app)
    dashboard = asgi_app(app, authorize=basic_auth([Credential("alice", "pw", Access.FULL)]))
    caplog.set_level(logging.INFO, logger="pgtasks.dashboard")
    with TestClient(dashboard, headers=basic("alice", "pw")) as client:
        page(client, "/jobs")
        token = csrf(client)

        def post(url: str, **form: Any) -> None:
            response = client.post(url, data={"csrf": token, **form}, follow_redirects=False)
            assert response.status_code in (200, 303), response.text[:2000]

        def audit() -> list[dict[str, Any]]:
            return logged(caplog.records, "dashboard.action")

        chosen = jobs.discarded + jobs.running[:1]
        post("/jobs/action", action="retry", scope="selection", ids=[str(i) for i in chosen])
        assert audit() == []  # asking for a confirmation changes nothing and logs nothing
        post("/jobs/action", action="retry", scope="selection", ids=[str(i) for i in chosen], confirm="3")
        assert audit() == [{"who": "alice", "action": "retry", "target": "selection", "requested": 3, "affected": 2,
                            "ids": sorted(chosen), "more_ids": 0}]
        caplog.clear()
        post("/jobs/action?queue=idle", action="cancel", scope="filter", confirm="3")
        assert audit() == [{"who": "alice", "action": "cancel", "target": "filter", "filter": "queue=idle",
                            "requested": 3, "affected": 3}]
        caplog.clear()
        post(f"/jobs/{jobs.completed[0]}/delete")
        assert audit() == [{"who": "alice", "action": "delete", "target": "selection", "requested": 1,
                            "affected": 1, "ids": [jobs.completed[0]], "more_ids": 0}]
        caplog.clear()
        post("/queues/pause", queue="idle")
        post("/queues/resume", queue="idle")
        assert audit() == [{"who": "alice", "action": "pause", "target": "queue", "queue": "idle"},
                           {"who": "alice", "action": "resume", "target": "queue", "queue": "idle"}]
        caplog.clear()
        # Refused requests are not actions.
        client.post("/queues/pause", data={"csrf": "wrong", "queue": "idle"})
        assert audit() == []


# -- serving: the bind check, the base path, the CLI, mounting ------------------------------------------


def test_check_bind_refuses_a_public_bind_without_credentials() -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        with pytest.raises(ConfigurationError, match=r"--auth USER:PASSWORD") as info:
            check_bind(host, [])
        assert f"--host {host} is reachable from other machines" in str(info.value)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_bind(host, [])
    credential = Credential("admin", "s3cret", Access.FULL)
    for host in ("0.0.0.0", "::"):
        check_bind(host, [credential])
    assert normalize_base_path("tasks/") == normalize_base_path("/tasks") == "/tasks"
    assert normalize_base_path("/") == ""
    with pytest.raises(ConfigurationError, match="--base-path"):
        normalize_base_path("/a b")


def local_links(doc: Node) -> list[str]:
    """Every same-site URL the page points to: links, scripts, stylesheets, forms, htmx requests."""
    urls = []
    for node in doc.iter():
        for name in ("href", "src", "action", "hx-get", "hx-post"):
            value = node.attrs.get(name, "")
            if value.startswith("/"):
                urls.append(value)
    return urls


def test_build_with_a_base_path_serves_everything_under_it(app: App, conn: psycopg.Connection[Any]) -> None:
    jobs = make_jobs(app)
    with TestClient(build(app, base_path="/tasks")) as client:
        response = client.get("/", follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == "/tasks/"
        for url in ("/tasks/", "/tasks/queues", "/tasks/jobs", f"/tasks/jobs/{jobs.discarded[0]}", "/tasks/workers",
                    "/tasks/periodic"):
            doc = page(client, url)
            links = local_links(doc)
            assert links and all(link.startswith("/tasks/") for link in links), (url, links)
            assert doc.one("meta", name="pgtasks-base").attrs["content"] == "/tasks"
        assert client.get("/tasks/static/dashboard.js").status_code == 200
        assert client.get("/jobs").status_code == 404
        response = client.post("/tasks/queues/pause", data={"csrf": csrf(client), "queue": "idle"},
                               follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/tasks/queues"
        assert paused_queues(conn, app.schema)["idle"] is not None
        response = client.post(f"/tasks/jobs/{jobs.discarded[0]}/retry", data={"csrf": csrf(client)},
                               follow_redirects=False)
        assert response.headers["location"] == f"/tasks/jobs/{jobs.discarded[0]}"


def test_cli_refuses_a_public_bind_without_auth_and_a_malformed_auth(app: App) -> None:
    base = ["--database-url", app.dsn, "--schema", app.schema, "dashboard"]
    result = CliRunner().invoke(main, [*base, "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code != 0
    assert "--host 0.0.0.0 is reachable from other machines" in result.output
    assert "--auth USER:PASSWORD" in result.output
    result = CliRunner().invoke(main, [*base, "--auth", "nocolon"])
    assert result.exit_code == 2  # click's usage error
    assert "--auth: expected USER:PASSWORD" in result.output and "without a colon" in result.output
    result = CliRunner().invoke(main, [*base, "--read-auth", "viewer:"])
    assert result.exit_code == 2 and "--read-auth" in result.output and "empty user or password" in result.output


def test_mounted_in_fastapi(app: App, conn: psycopg.Connection[Any]) -> None:
    jobs = make_jobs(app)
    api = FastAPI()

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    api.mount("/tasks", asgi_app(app))
    with TestClient(api) as client:
        assert client.get("/health").json() == {"status": "ok"}
        doc = page(client, "/tasks/jobs")
        assert row_ids(doc) == sorted(jobs.every, reverse=True)
        assert all(link.startswith("/tasks/") for link in local_links(doc))
        assert page(client, "/tasks/").find_all("span", cls="value", data_state="discarded")[0].words() == "2"
        response = client.post("/tasks/jobs/action", data={
            "csrf": csrf(client), "action": "retry", "scope": "selection",
            "ids": [str(i) for i in jobs.discarded], "confirm": "2"})
        assert result_of(response) == "2 jobs retried"
        assert {states(conn, app.schema)[i] for i in jobs.discarded} == {"available"}


# -- through PgBouncer's transaction pool: no session state, no prepared statements -----------------------


@pytest.mark.pgbouncer
def test_pages_and_an_action_through_the_transaction_pool(pgbouncer: PgBouncerLab, app: App,
                                                          conn: psycopg.Connection[Any]) -> None:
    jobs = make_jobs(app)
    # An App without the tasks, as `pgtasks dashboard` without --app: every job is still shown.
    pooled = App(pgbouncer.instances["transaction"].dsn, schema=app.schema)
    try:
        # A tiny refresh interval, so the overview queries run on every request too.
        with TestClient(asgi_app(pooled, refresh_interval=0.001)) as client:
            findings = page(client, "/fragments/doctor").by_id("doctor").words()
            assert "warn listen: LISTEN does not work on the listen DSN (transaction)" in findings
            # psycopg prepares a statement on its 5th run by default; through a transaction pool the
            # next run could land on a server connection that lacks it. Six runs of each page pass that.
            for _ in range(6):
                for url in ("/", "/queues", "/jobs", f"/jobs/{jobs.discarded[0]}", "/workers", "/periodic",
                            "/jobs?state=discarded&q=%7B%22n%22%3A%201%7D"):
                    page(client, url)
            assert row_ids(page(client, "/jobs")) == sorted(jobs.every, reverse=True)
            assert row_ids(page(client, "/jobs", state="discarded")) == sorted(jobs.discarded, reverse=True)
            _, count, _ = confirmation(bulk(client, "retry", scope="filter", query={"state": "discarded"}))
            assert count == 2
            assert result_of(bulk(client, "retry", scope="filter", query={"state": "discarded"}, confirm=2)) == (
                "2 jobs retried")
            assert {states(conn, app.schema)[i] for i in jobs.discarded} == {"available"}
    finally:
        pooled.close()


def test_static_files_are_served(client: TestClient) -> None:
    for path, kind in (("/static/dashboard.js", "javascript"), ("/static/dashboard.css", "text/css"),
                       ("/static/vendor/htmx/htmx.min.js", "javascript"),
                       ("/static/vendor/uplot/uPlot.iife.min.js", "javascript")):
        response = client.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"], path
        assert len(response.content) > 100
    assert re.search(r"uPlot", client.get("/static/vendor/uplot/uPlot.iife.min.js").text)


def test_many_concurrent_page_requests(world: World, client: TestClient) -> None:
    """Pages run their queries in the thread pool on the App's pool: a burst of them all succeed."""
    urls = ["/", "/queues", "/jobs", f"/jobs/{world.ids['boom']}", "/workers", "/periodic"] * 4
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda url: client.get(url).status_code, urls))
    assert codes == [200] * len(urls)
