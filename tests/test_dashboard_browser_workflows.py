"""The workflows pages in a real Chromium (Debian's, through Playwright) against a real PostgreSQL: an
open chord's graph turns completed step by step while a worker drains it, without a reload; a node
leads to its job, whose page names the workflow; cancel from the page, confirmed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page

from pgtasks import App, chain, chord
from tests.live_latency import drain_in_thread
from tests.test_dashboard_browser import TRACK_EVENT_SOURCES, Problems, dashboard, open_live

NODE_STATES = "() => [...document.querySelectorAll('#graph g.node')].map((n) => n.dataset.state)"
COMPLETED_FILL = "rgb(235, 251, 238)"  # .workflow-graph .node.state-completed rect in dashboard.css


@pytest.fixture
def page(page: Page) -> Page:
    """conftest's page, counting the EventSources each document opens (open_live waits for one)."""
    page.add_init_script(TRACK_EVENT_SOURCES)
    return page


def test_a_chord_drains_and_its_nodes_turn_completed_in_the_open_page(
        app: App, page: Page, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="resize")
    def resize(n: int) -> int:
        return n * 10

    @app.task(name="collect")
    def collect(sizes: list[int]) -> int:
        return sum(sizes)

    ref = chord([resize.s(n) for n in range(4)], collect.s()).delay()
    problems = Problems(page)
    with dashboard(app, page) as base_url:
        open_live(page, f"{base_url}/workflows/{ref.id}")
        assert page.evaluate(NODE_STATES) == ["available"] * 4 + ["waiting"]
        assert page.inner_text("#workflow-state") == "running"
        page.evaluate("window.__marker = 1")

        drain_in_thread(app)
        page.wait_for_function(f"({NODE_STATES})().join() === {','.join(['completed'] * 5)!r}", timeout=5000)
        assert page.evaluate("window.__marker") == 1  # the same document: no reload, no navigation
        assert page.inner_text("#workflow-state") == "completed"
        callback = f'#graph a[href="/jobs/{ref.job_ids[4]}"]'
        assert page.eval_on_selector(f"{callback} rect", "r => getComputedStyle(r).fill") == COMPLETED_FILL
        assert page.inner_text('#steps tr[data-step="4"] td.result') == "60"
        assert page.locator("#graph path.edge").count() == 4

        page.click(callback)
        page.wait_for_url(f"{base_url}/jobs/{ref.job_ids[4]}")
        assert page.inner_text("#workflow") == f"{ref.id}, step 4 (chord.body)"
        assert page.inner_text("#result") == "60"
    assert problems.seen == []
    row = conn.execute(f'SELECT count(*) FROM "{app.schema}".jobs WHERE workflow_id = %s AND state = %s',
                       [ref.id, "completed"]).fetchone()
    assert row == (5,)


def test_cancel_from_the_workflow_page_asks_then_cancels(
        app: App, page: Page, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="step", queue="unserved")
    def step(n: int) -> int:
        return n

    ref = chain(step.s(1), step.s(), step.s()).delay()
    problems = Problems(page)
    with dashboard(app, page) as base_url:
        open_live(page, f"{base_url}/workflows/{ref.id}")
        with page.expect_navigation():
            page.click("button.act-cancel")
        assert page.inner_text("#confirm-text").startswith(f"Cancel workflow {ref.id} (chain, 3 steps)? Its 3 "
                                                          "unfinished steps")
        assert conn.execute(f'SELECT count(*) FROM "{app.schema}".jobs WHERE state = %s',
                            ["cancelled"]).fetchone() == (0,)
        with page.expect_navigation():
            page.click("#confirm-button")
        assert page.url == f"{base_url}/workflows/{ref.id}"
        assert page.inner_text("#workflow-state") == "cancelled"
        assert page.evaluate(NODE_STATES) == ["cancelled"] * 3
        assert page.locator("button.act-cancel").count() == 0
    assert problems.seen == []
    assert ref.state() == "cancelled"
