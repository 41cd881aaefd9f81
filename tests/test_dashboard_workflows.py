"""The dashboard's workflows pages through Starlette's TestClient against a real PostgreSQL: the list
with its state filter and keyset pages, a chain, a chord and a nested workflow drawn as a graph (one
node per step, coloured by its job's state, an edge per successor), the table of steps, the job
page naming its workflow, cancel (confirmed, audited, refused read-only and without CSRF), and the
escaping of step arguments and results."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from pgtasks import App, WorkflowRef, chain, chord, group
from pgtasks.core.channels import control_channel
from pgtasks.dashboard import asgi_app
from pgtasks.dashboard import workflows as workflow_data
from pgtasks.dashboard.graph import MAX_MEMBERS
from pgtasks.dashboard.render import NOTHING
from tests.helpers import drain, logged
from tests.test_dashboard import SCRIPT, SCRIPT_ESCAPED, Node, csrf, dd_after, page, parse_html, problem

HOLDER = "test-holder"  # the worker id that claims the "hold" queue's steps, which keeps them running


@dataclass
class Tasks:
    add: Any
    total: Any
    fail: Any
    echo: Any
    hold: Any


@pytest.fixture
def tasks(app: App) -> Tasks:
    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="total")
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="fail", max_attempts=1)
    def fail(x: int) -> int:
        raise RuntimeError(f"no {x}")

    @app.task(name="echo")
    def echo(text: str) -> str:
        return text

    @app.task(name="hold", queue="hold")
    def hold(x: int) -> int:
        raise AssertionError("the hold queue is claimed by the test, never run")

    return Tasks(add, total, fail, echo, hold)


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(asgi_app(app)) as test_client:
        page(test_client, "/workflows")  # sets the CSRF cookie
        yield test_client


def steps_of(conn: psycopg.Connection[Any], app: App, workflow_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f'SELECT id, workflow_step, state::text AS state, next_ids, cancel_requested_at, errors '
                    f'FROM "{app.schema}".jobs WHERE workflow_id = %s ORDER BY workflow_step', [workflow_id])
        return cur.fetchall()


def states_of(conn: psycopg.Connection[Any], app: App, workflow_id: int) -> list[str]:
    return [str(s["state"]) for s in steps_of(conn, app, workflow_id)]


def claim_hold(app: App, expected: int) -> None:
    """Claim the hold queue's due steps as a worker would, so that they are running."""
    async def claim() -> None:
        conn = await app.aconnect()
        async with conn:
            claimed = await app.store.ajob_fetch_available(conn, queues=["hold"], limit=10, worker_id=HOLDER)
        assert len(claimed) == expected

    asyncio.run(claim())


def list_rows(doc: Node) -> list[tuple[int, str]]:
    return [(int(tr.attrs["data-id"]), tr.attrs["data-state"])
            for tr in doc.by_id("workflows").find_all("tr", data_id=True)]


@dataclass(frozen=True)
class Drawn:
    node: Node
    href: str | None


def drawn_nodes(doc: Node) -> list[Drawn]:
    """The graph's nodes, each with the link it sits in (none for a node without a job)."""
    svg = doc.by_id("graph")
    linked = {id(a.one("g", cls="node")): a.attrs["href"] for a in svg.find_all("a")}
    return [Drawn(g, linked.get(id(g))) for g in svg.find_all("g", cls="node")]


def drawn_edges(doc: Node) -> set[tuple[str, str]]:
    return {(p.attrs["data-source"], p.attrs["data-target"]) for p in doc.by_id("graph").find_all("path", cls="edge")}


def assert_graph_matches_database(doc: Node, conn: psycopg.Connection[Any], app: App, ref: WorkflowRef) -> None:
    """One node per step, linking to its job and coloured by its state; an edge per successor."""
    steps = steps_of(conn, app, ref.id)
    nodes = drawn_nodes(doc)
    assert [d.node.attrs["data-key"] for d in nodes if d.node.attrs.get("data-steps")] == \
           [d.node.attrs["data-key"] for d in nodes]
    by_step = {int(d.node.attrs["data-steps"]): d for d in nodes}
    assert sorted(by_step) == [int(s["workflow_step"]) for s in steps]
    for s in steps:
        drawn = by_step[int(s["workflow_step"])]
        assert drawn.node.attrs["data-state"] == s["state"]
        assert f"state-{s['state']}" in drawn.node.attrs["class"].split()
        assert drawn.node.attrs["data-job-id"] == str(s["id"]) and drawn.href == f"/jobs/{s['id']}"
    step_of_job = {int(s["id"]): int(s["workflow_step"]) for s in steps}
    expected = {(f"step-{s['workflow_step']}", f"step-{step_of_job[n]}") for s in steps for n in s["next_ids"] or ()}
    assert drawn_edges(doc) == expected


def test_the_list_shows_workflows_newest_first_and_filters_by_state(
        app: App, tasks: Tasks, client: TestClient) -> None:
    done = chain(tasks.add.s(1, 1), tasks.add.s(2)).delay()
    summed = chord([tasks.add.s(i, i) for i in range(3)], tasks.total.s()).delay()
    failed = chain(tasks.add.s(1, 1), tasks.fail.s(), tasks.add.s(1)).delay()
    drain(app)
    running = chain(tasks.add.s(5, 5), tasks.add.s(1)).delay()
    cancelled = group(tasks.hold.s(1), tasks.hold.s(2)).delay()
    with app.connect() as conn:
        app.store.workflow_cancel(conn, cancelled.id, reason="not needed", control=control_channel(app.schema))

    doc = page(client, "/workflows")
    assert doc.one("a", aria_current="page").words() == "Workflows"
    assert list_rows(doc) == [(cancelled.id, "cancelled"), (running.id, "running"), (failed.id, "failed"),
                              (summed.id, "completed"), (done.id, "completed")]
    rows = {int(tr.attrs["data-id"]): [td.words() for td in tr.find_all("td")]
            for tr in doc.by_id("workflows").find_all("tr", data_id=True)}
    # id, kind, state, steps, created, finished, took
    assert rows[summed.id][:4] == [str(summed.id), "chord", "completed", "4/4 completed"]
    assert rows[failed.id][:4] == [str(failed.id), "chain", "failed", "1/3 completed · 2 failed or cancelled"]
    assert rows[running.id][:4] == [str(running.id), "chain", "running", "0/2 completed · 2 unfinished"]
    assert rows[done.id][5].endswith(" ago") and rows[done.id][6].endswith(" ms")
    assert rows[running.id][5:] == ["", ""]  # not finished: no finish time, no duration
    link = doc.by_id("workflows").one("a", href=f"/workflows/{summed.id}")
    assert link.words() == str(summed.id)

    def listed(*states: str) -> list[int]:
        found = page(client, "/workflows", state=list(states))
        for state in states:
            assert "checked" in found.by_id("filters").one("input", value=state).attrs
        return [i for i, _ in list_rows(found)]

    assert listed("failed") == [failed.id]
    assert listed("running") == [running.id]
    assert listed("cancelled", "failed") == [cancelled.id, failed.id]
    assert listed("completed") == [summed.id, done.id]
    assert listed("running", "completed") == [running.id, summed.id, done.id]
    bad = client.get("/workflows", params={"state": "waiting"})
    assert bad.status_code == 400
    assert problem(bad) == ("state='waiting' is not a workflow state: use one of running, completed, failed, "
                            "cancelled")
    assert client.get("/workflows", params={"limit": "7"}).status_code == 400


def test_keyset_pages_and_a_filtered_window_that_goes_on(
        app: App, tasks: Tasks, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    refs = [group(tasks.add.s(i, i)).delay() for i in range(22)]
    drain(app)
    newest_first = [r.id for r in reversed(refs)]
    first = page(client, "/workflows", limit="20")
    assert [i for i, _ in list_rows(first)] == newest_first[:20]
    older = first.by_id("older").attrs["href"]
    assert older == f"/workflows?limit=20&before={newest_first[19]}"
    second = page(client, older)
    assert [i for i, _ in list_rows(second)] == newest_first[20:]
    assert not second.find_all(id="older") and second.one("a", href="/workflows?limit=20").words() == "newest"

    # Three running workflows older than the 22 completed ones would need a long walk: a filtered
    # page reads a window of workflows and goes on from where it stopped.
    monkeypatch.setattr(workflow_data, "WORKFLOW_SCAN", 10)
    waiting = [chain(tasks.hold.s(i), tasks.add.s(1)).delay() for i in range(3)]
    refs += [group(tasks.add.s(i, i)).delay() for i in range(15)]
    drain(app, queues=["default"])
    found: list[int] = []
    url = "/workflows?state=running"
    pages = 0
    while url:
        doc = page(client, url)
        pages += 1
        found += [i for i, _ in list_rows(doc)]
        more = doc.find_all(id="older")
        url = more[0].attrs["href"] if more else ""
        if not list_rows(doc) and more:
            assert "among the 10 newest looked at" in doc.by_id("workflows").words()
            assert "looked at 10 workflows for this page" in doc.one("nav", cls="pager").words()
    assert found == [w.id for w in reversed(waiting)]
    assert pages == 4  # 40 workflows, 10 per window, and no link past the oldest
    monkeypatch.setattr(workflow_data, "ENDED_SCAN", 10)
    assert [i for i, _ in list_rows(page(client, "/workflows", state="failed"))] == []


def test_a_chain_that_failed_is_drawn_step_by_step_with_its_states(
        app: App, tasks: Tasks, client: TestClient, conn: psycopg.Connection[Any]) -> None:
    ref = chain(tasks.add.s(1, 1), tasks.fail.s(), tasks.add.s(1)).delay()
    drain(app)
    assert states_of(conn, app, ref.id) == ["completed", "discarded", "cancelled"]
    doc = page(client, f"/workflows/{ref.id}")
    assert doc.by_id("workflow-state").words() == "failed"
    assert_graph_matches_database(doc, conn, app, ref)
    assert drawn_edges(doc) == {("step-0", "step-1"), ("step-1", "step-2")}
    # A chain runs left to right on one row; the step that failed the workflow stands out.
    nodes = {d.node.attrs["data-key"]: d.node for d in drawn_nodes(doc)}
    assert [nodes[f"step-{i}"].attrs["transform"] for i in range(3)] == \
           ["translate(8 8)", "translate(232 8)", "translate(456 8)"]
    assert "culprit" in nodes["step-1"].attrs["class"].split()
    assert dd_after(doc, "failed").endswith(f"at job {ref.job_ids[1]} (step 1, chain[1]: discarded, RuntimeError: "
                                            "no 2)")
    assert dd_after(doc, "steps") == "3: 1 cancelled · 1 completed · 1 discarded"

    table = {int(tr.attrs["data-step"]): [td.words() for td in tr.find_all("td")]
             for tr in doc.by_id("steps").find_all("tr", data_step=True)}
    # step, position, job, task, state, attempt, time, arguments, result
    assert table[0][:6] == ["0", "chain[0]", str(ref.job_ids[0]), "add", "completed", "1/20"]
    assert table[0][6].startswith("ran ") and table[0][7:] == ['{"x": 1, "y": 1}', "2"]
    assert table[1][4:6] == ["discarded", "1/1"] and table[1][8] == "RuntimeError: no 2"
    assert table[2][4:7] == ["cancelled", "0/20", NOTHING]
    assert table[2][8].startswith(f"WorkflowFailed: workflow {ref.id} failed: step 1 (job {ref.job_ids[1]}, fail)")


def test_a_chord_is_drawn_as_members_stacked_into_its_callback(
        app: App, tasks: Tasks, client: TestClient, conn: psycopg.Connection[Any]) -> None:
    ref = chord([tasks.add.s(i, i) for i in range(3)], tasks.total.s()).delay()
    before = page(client, f"/workflows/{ref.id}")
    assert_graph_matches_database(before, conn, app, ref)
    assert [d.node.attrs["data-state"] for d in drawn_nodes(before)] == ["available"] * 3 + ["waiting"]
    assert drawn_edges(before) == {("step-0", "step-3"), ("step-1", "step-3"), ("step-2", "step-3")}
    positions = {d.node.attrs["data-key"]: d.node.attrs["transform"] for d in drawn_nodes(before)}
    assert positions == {"step-0": "translate(8 8)", "step-1": "translate(8 66)", "step-2": "translate(8 124)",
                         "step-3": "translate(232 66)"}
    assert before.by_id("live").attrs["hx-trigger"] == "pgtasks-jobs from:body"
    waiting = before.by_id("steps").one("tr", data_step="3")
    assert [td.words() for td in waiting.find_all("td")][6] == "waits for 3"

    drain(app)
    after = page(client, f"/workflows/{ref.id}")
    assert_graph_matches_database(after, conn, app, ref)
    assert {d.node.attrs["data-state"] for d in drawn_nodes(after)} == {"completed"}
    assert after.by_id("workflow-state").words() == "completed"
    callback = after.by_id("steps").one("tr", data_step="3")
    assert [td.words() for td in callback.find_all("td")][7:] == ['{"values": [0, 2, 4]}', "6"]
    assert not after.find_all(cls="act-cancel")  # nothing left to cancel


def test_a_nested_workflow_and_a_big_group_collapsed(
        app: App, tasks: Tasks, client: TestClient, conn: psycopg.Connection[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    nested = chain(tasks.add.s(1, 1),
                   group(chain(tasks.add.s(1), chord([tasks.add.s(1), tasks.add.s(2)], tasks.total.s())),
                         tasks.add.s(5)),
                   tasks.total.s()).delay()
    drain(app)
    doc = page(client, f"/workflows/{nested.id}")
    assert_graph_matches_database(doc, conn, app, nested)
    assert drawn_edges(doc) == {("step-0", "step-1"), ("step-0", "step-5"), ("step-1", "step-2"),
                                ("step-1", "step-3"), ("step-2", "step-4"), ("step-3", "step-4"),
                                ("step-4", "step-6"), ("step-5", "step-6")}
    positions = [td.words() for tr in doc.by_id("steps").find_all("tr", data_step=True)
                 for td in tr.find_all("td")[1:2]]
    assert positions == ["chain[0]", "chain[1] > group[0] > chain[0]",
                         "chain[1] > group[0] > chain[1] > chord.header > group[0]",
                         "chain[1] > group[0] > chain[1] > chord.header > group[1]",
                         "chain[1] > group[0] > chain[1] > chord.body", "chain[1] > group[1]", "chain[2]"]
    assert states_of(conn, app, nested.id) == ["completed"] * 7

    # A chord of 40 members: the first members, one node for the rest, and the callback; the table
    # lists at most MAX_TABLE_STEPS of them.
    monkeypatch.setattr(workflow_data, "MAX_TABLE_STEPS", 25)
    big = chord([tasks.add.s(i, i) for i in range(40)], tasks.total.s()).delay()
    doc = page(client, f"/workflows/{big.id}")
    nodes = drawn_nodes(doc)
    assert len(nodes) == MAX_MEMBERS + 1
    more = next(d for d in nodes if d.node.attrs["data-key"].startswith("more-"))
    hidden = list(range(MAX_MEMBERS - 1, 40))
    assert more.href is None and more.node.attrs["data-steps"] == " ".join(map(str, hidden))
    assert more.node.attrs["data-state"] == "available"
    assert more.node.one("title").words() == f"{len(hidden)} more steps: {len(hidden)} available (listed in the " \
                                             "table below)"
    assert drawn_edges(doc) == {(f"step-{i}", "step-40") for i in range(MAX_MEMBERS - 1)} | \
                               {(more.node.attrs["data-key"], "step-40")}
    assert doc.by_id("graph-hidden").words().startswith(f"{len(hidden)} steps are drawn inside “more” nodes")
    assert len(doc.by_id("steps").find_all("tr", data_step=True)) == 25
    assert "41, the first 25 shown" in doc.find_all("h2")[-1].words()


def test_the_job_page_names_its_workflow_and_position(
        app: App, tasks: Tasks, client: TestClient) -> None:
    ref = chain(tasks.add.s(1, 1), chord([tasks.add.s(1), tasks.add.s(2)], tasks.total.s())).delay()
    doc = page(client, f"/jobs/{ref.job_ids[2]}")
    assert dd_after(doc, "workflow") == f"{ref.id}, step 2 (chain[1] > chord.header > group[1])"
    assert doc.by_id("workflow").one("a").attrs["href"] == f"/workflows/{ref.id}"
    plain = tasks.add.delay(1, 2)
    assert not page(client, f"/jobs/{plain.id}").find_all(id="workflow")
    with app.connect() as conn:
        conn.execute(f'DELETE FROM "{app.schema}".workflows WHERE id = %s'.encode(), [ref.id])
    assert dd_after(page(client, f"/jobs/{ref.job_ids[0]}"), "workflow") == \
           f"{ref.id}, step 0 (its workflow was deleted)"


def test_cancel_asks_first_then_cancels_like_the_cli_and_logs_one_audit_line(
        app: App, tasks: Tasks, client: TestClient, conn: psycopg.Connection[Any],
        caplog: pytest.LogCaptureFixture) -> None:
    ref = chain(group(tasks.hold.s(1), tasks.add.s(2, 2)), tasks.total.s(), tasks.add.s(1)).delay()
    claim_hold(app, 1)
    assert states_of(conn, app, ref.id) == ["running", "available", "waiting", "waiting"]
    caplog.set_level(logging.INFO, logger="pgtasks.dashboard")
    doc = page(client, f"/workflows/{ref.id}")
    form = doc.one("form", method="post")
    assert form.attrs["action"] == f"/workflows/{ref.id}/cancel" and form.one("button").words() == "Cancel…"

    asked = client.post(f"/workflows/{ref.id}/cancel", data={"csrf": csrf(client)})
    assert asked.status_code == 200
    confirm = parse_html(asked.text)
    assert confirm.by_id("confirm-text").words() == (
        f"Cancel workflow {ref.id} (chain, 4 steps)? Its 4 unfinished steps: 3 waiting or due end cancelled now, "
        "1 running is asked to stop. Finished steps keep their results; no link_error runs.")
    assert confirm.one("input", name="confirm").attrs["value"] == "yes"
    assert states_of(conn, app, ref.id) == ["running", "available", "waiting", "waiting"]
    assert logged(caplog.records, "dashboard.action") == []

    done = client.post(f"/workflows/{ref.id}/cancel", data={"csrf": csrf(client), "confirm": "yes"},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/workflows/{ref.id}"
    steps = steps_of(conn, app, ref.id)
    assert [s["state"] for s in steps] == ["running", "cancelled", "cancelled", "cancelled"]
    assert steps[0]["cancel_requested_at"] is not None
    who = "anonymous@testclient"
    assert steps[1]["errors"][-1]["message"] == f"workflow {ref.id} cancelled from the dashboard by {who}"
    assert logged(caplog.records, "dashboard.action") == [
        {"who": who, "action": "cancel", "target": "workflow", "workflow": ref.id, "requested": 4, "affected": 4}]
    assert ref.state() == "cancelled"
    after = page(client, f"/workflows/{ref.id}")
    assert after.by_id("workflow-state").words() == "cancelled" and not after.find_all(cls="act-cancel")
    assert dd_after(after, "cancelled")

    # An unknown workflow is a 404, asked or confirmed; a finished one has nothing left to cancel.
    for form_data in ({}, {"confirm": "yes"}):
        missing = client.post("/workflows/999999/cancel", data={"csrf": csrf(client), **form_data})
        assert missing.status_code == 404 and problem(missing) == f"no workflow 999999 in schema {app.schema}"
    finished = chain(tasks.add.s(1, 1)).delay()
    drain(app, queues=["default"])
    nothing = parse_html(client.post(f"/workflows/{finished.id}/cancel", data={"csrf": csrf(client)}).text)
    assert nothing.by_id("confirm-text").words() == \
           f"Workflow {finished.id} has no unfinished step: there is nothing left to cancel."
    assert not nothing.find_all(id="confirm-button")


def test_cancel_is_refused_read_only_and_without_a_csrf_token(
        app: App, tasks: Tasks, conn: psycopg.Connection[Any]) -> None:
    ref = chain(tasks.add.s(1, 1), tasks.add.s(2)).delay()
    url = f"/workflows/{ref.id}/cancel"
    with TestClient(asgi_app(app, read_only=True)) as reader:
        doc = page(reader, f"/workflows/{ref.id}")
        assert not doc.find_all("form", method="post") and not doc.find_all(cls="act-cancel")
        response = reader.post(url, data={"csrf": csrf(reader), "confirm": "yes"})
        assert response.status_code == 403 and "read-only access" in problem(response)
    with TestClient(asgi_app(app)) as writer:
        page(writer, f"/workflows/{ref.id}")
        for token in ("", "x" * 43, csrf(writer)[::-1]):
            response = writer.post(url, data={"csrf": token, "confirm": "yes"})
            assert response.status_code == 403 and "missing or wrong CSRF token" in problem(response)
        response = writer.post(url, data={"csrf": csrf(writer), "confirm": "yes"},
                               headers={"Origin": "https://elsewhere.example"})
        assert response.status_code == 403 and "elsewhere.example" in problem(response)
        assert writer.post("/workflows/abc/cancel", data={"csrf": csrf(writer)}).status_code == 404
    assert states_of(conn, app, ref.id) == ["available", "waiting"]
    assert ref.state() == "running"


def test_step_arguments_and_results_are_escaped(
        app: App, tasks: Tasks, client: TestClient) -> None:
    ref = chain(tasks.echo.s(SCRIPT), tasks.echo.si(f"{SCRIPT} & more")).delay()
    drain(app)
    response = client.get(f"/workflows/{ref.id}")
    assert response.status_code == 200
    assert SCRIPT not in response.text
    assert response.text.count(SCRIPT_ESCAPED) >= 4  # two arguments, two results
    doc = parse_html(response.text)
    table = {int(tr.attrs["data-step"]): [td.words() for td in tr.find_all("td")]
             for tr in doc.by_id("steps").find_all("tr", data_step=True)}
    assert table[0][7:] == [f'{{"text": "{SCRIPT}"}}', f'"{SCRIPT}"']
    assert table[1][7:] == [f'{{"text": "{SCRIPT} & more"}}', f'"{SCRIPT} & more"']


def test_bad_and_unknown_workflow_ids(app: App, client: TestClient) -> None:
    for bad in ("abc", "0", "-1", "²", str(2**63)):
        response = client.get(f"/workflows/{bad}")
        assert response.status_code == 404 and problem(response) == f"{bad!r} is not a workflow id"
    response = client.get("/workflows/424242")
    assert response.status_code == 404
    assert problem(response) == (f"no workflow 424242 in schema {app.schema} (finished workflows are deleted after "
                                 "their retention)")
    empty = page(client, "/workflows")
    assert empty.by_id("workflows").words().endswith("no workflow yet: chain, group and chord enqueue one "
                                                     "(docs/workflows.md)")


def test_the_state_and_the_steps_are_read_in_one_snapshot(
        app: App, tasks: Tasks, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step completes (a worker drains the chord and commits) after the page has read the
    workflow and before it reads the steps: both reads still agree, running with 3 unfinished steps.
    Read apart, the page drew completed nodes under a workflow marked running, and stayed so."""
    from pgtasks.storage import dashboard as dashboard_store

    ref = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.total.s()).delay()
    read_workflow_between = dashboard_store._workflow_view

    def drained_between_the_reads(q: dict[str, Any], workflow_id: int, preview: int) -> Any:
        operation = read_workflow_between(q, workflow_id, preview)
        answer = None
        while True:
            try:
                step = operation.send(answer)
            except StopIteration as done:
                return done.value
            if step.query == q["dashboard_workflow_steps"]:  # the workflow was read; the steps are next
                drain(app)
            answer = yield step

    monkeypatch.setattr(dashboard_store, "_workflow_view", drained_between_the_reads)
    view = workflow_data.workflow_detail(app, ref.id)
    assert view is not None
    assert (view.workflow["state"], view.unfinished) == ("running", 3)
    assert ref.state() == "completed"
    monkeypatch.undo()
    view = workflow_data.workflow_detail(app, ref.id)
    assert view is not None
    assert (view.workflow["state"], view.unfinished) == ("completed", 0)
