"""The dashboard in a real Chromium (Debian's, through Playwright) against a real PostgreSQL: the
overview's charts and counts, filters in the URL, pausing a queue, retrying from the job page, a
bulk action on a filter, read-only mode, live updates without a reload and their pause while the
tab is hidden, and the README's screenshot."""

from __future__ import annotations

import contextlib
import os
import random
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, Route

import pgtasks
from pgtasks import App
from pgtasks.dashboard import asgi_app
from tests.browser import serve
from tests.helpers import is_leader, wait_for, worker_thread
from tests.live_latency import completion_to_row_seconds, drain_in_thread

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "dashboard-overview.png"
UPDATE_SCREENSHOTS = "PGTASKS_UPDATE_SCREENSHOTS"

# The three series' strokes in dashboard.js (completed, retried, discarded), as RGB.
SERIES_COLOURS = [[0x2F, 0x9E, 0x44], [0xE8, 0x59, 0x0C], [0xC9, 0x2A, 0x2A]]
COUNT_SERIES_PIXELS = """([selector, colours]) => {
  const canvas = document.querySelector(selector);
  if (canvas === null) return 0;  // between a live refresh's swap and the chart's redraw
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 3] < 200) continue;
    for (const [r, g, b] of colours) {
      if (Math.abs(pixels[i] - r) < 40 && Math.abs(pixels[i + 1] - g) < 40 && Math.abs(pixels[i + 2] - b) < 40) {
        n++;
        break;
      }
    }
  }
  return n;
}"""

# Keeps the EventSources the page opens, so a test can see each one's readyState (0 connecting,
# 1 open, 2 closed) without the dashboard exposing its own, and counts the changes they bring.
TRACK_EVENT_SOURCES = """(() => {
  const Original = window.EventSource;
  window.__sources = [];
  window.__changes = 0;
  window.EventSource = class extends Original {
    constructor(...args) {
      super(...args);
      window.__sources.push(this);
      this.addEventListener("change", () => { window.__changes += 1; });
    }
  };
})();"""

SET_HIDDEN = """(hidden) => {
  Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
  Object.defineProperty(document, "visibilityState", {configurable: true, get: () => hidden ? "hidden" : "visible"});
  document.dispatchEvent(new Event("visibilitychange"));
}"""

PUSHED = "live: pushed by LISTEN/NOTIFY"


class Problems:
    """Console errors, page errors and failed or refused requests of one page."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(f"console: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.seen.append(f"HTTP {response.status} {response.request.method} {response.url}")

    def _failed(self, request: Request) -> None:
        # An abort is the page's own doing: leaving it (a link, a form, an action's redirect) cuts
        # its event stream and any live refresh still in flight. A server that fails shows as a
        # status above or as another net:: error here.
        if request.failure == "net::ERR_ABORTED":
            return
        self.seen.append(f"failed: {request.method} {request.url} {request.failure}")


@contextlib.contextmanager
def dashboard(app: App, page: Page, **options: Any) -> Iterator[str]:
    """The dashboard of `app` served on a local port; yields its base URL.

    On leaving, the page goes to about:blank first: that closes its event stream, which the server
    would otherwise wait for (tests/browser.py's GRACEFUL_SHUTDOWN) before it stops.
    """
    with serve(asgi_app(app, **options)) as base_url:
        try:
            yield base_url
        finally:
            page.goto("about:blank")


@pytest.fixture
def page(page: Page) -> Page:
    """conftest's page, counting the EventSources each document opens (TRACK_EVENT_SOURCES)."""
    page.add_init_script(TRACK_EVENT_SOURCES)
    return page


def wait_stream_open(page: Page) -> None:
    """Until this document's event stream is open: the server subscribes it before it answers, so
    from then on every change reaches the page."""
    page.wait_for_function("window.__sources?.length > 0 && window.__sources.at(-1).readyState === 1")
    page.wait_for_function(f"document.getElementById('live-status')?.textContent === {PUSHED!r}")


def open_live(page: Page, url: str) -> None:
    page.goto(url)
    wait_stream_open(page)


def row_ids(page: Page, state: str | None = None) -> list[int]:
    selector = "#jobs tbody tr[data-id]" + (f'[data-state="{state}"]' if state else "")
    return [int(v) for v in page.eval_on_selector_all(selector, "rows => rows.map(r => r.dataset.id)")]


def state_of(conn: psycopg.Connection[Any], app: App, job_id: int) -> str:
    row = conn.execute(f'SELECT state::text FROM "{app.schema}".jobs WHERE id = %s', [job_id]).fetchone()
    assert row is not None
    return str(row[0])


@dataclass
class Seed:
    """The jobs `seed()` left, by how they ended."""

    completed: list[int] = field(default_factory=list)  # first try
    retried: list[int] = field(default_factory=list)  # failed once, then completed
    discarded: list[int] = field(default_factory=list)  # failed both attempts
    available: list[int] = field(default_factory=list)  # in the "mail" queue, which no worker served
    scheduled: list[int] = field(default_factory=list)  # due in an hour


def seed(app: App) -> Seed:
    """Jobs in every common end state, made by a real worker: 4 completed, 2 completed after a retry,
    3 discarded (after a retry each), and 3 available in "mail" plus 2 scheduled in "default"."""

    @app.task(name="work", max_attempts=2, retry=pgtasks.Fixed(0))
    def work(n: int, failures: int = 0) -> int:
        attempt = pgtasks.current_job().attempt
        if attempt <= failures:
            raise ValueError(f"item {n}: attempt {attempt} failed")
        return n * 2

    @app.task(name="mail.send", queue="mail")
    def send(to: str) -> None:
        raise AssertionError("the mail queue is not served in these tests")

    s = Seed()
    for n in range(4):
        s.completed.append(work.delay(n).id)
    for n in range(4, 6):
        s.retried.append(work.delay(n, failures=1).id)
    for n in range(6, 9):
        s.discarded.append(work.delay(n, failures=2).id)
    for n in range(3):
        s.available.append(send.delay(f"user{n}@example.com").id)
    for n in range(2):
        s.scheduled.append(work.apply_async(args=(100 + n,), countdown=3600).id)
    drain_in_thread(app, queues=["default"])
    return s


def test_overview_draws_both_charts_and_counts_the_seeded_jobs(app: App, page: Page) -> None:
    s = seed(app)
    problems = Problems(page)
    with dashboard(app, page) as base_url:
        page.goto(f"{base_url}/")
        for chart in ("#chart-hour", "#chart-day"):
            selector = f"{chart} canvas"
            page.wait_for_selector(selector)
            assert page.locator(selector).count() == 1
            # uPlot draws on a later frame: wait for the series' strokes, then ask for a real line.
            page.wait_for_function(f"(arg) => ({COUNT_SERIES_PIXELS})(arg) > 0", arg=[selector, SERIES_COLOURS])
            assert page.evaluate(COUNT_SERIES_PIXELS, [selector, SERIES_COLOURS]) > 200

        # What the charts were given: this minute's completions, retried attempts (the discarded
        # jobs' first attempts count: their last failure ended them, the first was retried) and discards.
        totals = page.evaluate("""() => {
          const sum = (xs) => xs.reduce((a, b) => a + (b || 0), 0);
          const c = window.pgtasksDashboard.charts;
          return ["chart-hour", "chart-day"].map((id) => c[id].data.slice(1).map(sum));
        }""")
        expected = [len(s.completed) + len(s.retried), len(s.retried) + len(s.discarded), len(s.discarded)]
        assert totals == [expected, expected]

        cards = dict(page.eval_on_selector_all(
            ".cards .value[data-state]", "els => els.map(e => [e.dataset.state, e.textContent.trim()])"))
        assert cards == {"waiting": "0", "available": "3", "scheduled": "2", "running": "0", "retryable": "0",
                         "completed": "6", "cancelled": "0", "discarded": "3"}
        # The doctor's findings come in a fragment after load; wait for it so its request is checked too.
        page.wait_for_selector("#doctor")
    assert problems.seen == []


def test_a_state_filter_goes_into_the_url_and_narrows_the_rows(app: App, page: Page) -> None:
    s = seed(app)
    problems = Problems(page)
    with dashboard(app, page) as base_url:
        page.goto(f"{base_url}/jobs")
        assert sorted(row_ids(page)) == sorted(s.completed + s.retried + s.discarded + s.available + s.scheduled)
        page.check('#filters input[name="state"][value="discarded"]')
        with page.expect_navigation():
            page.click("#apply-filters")
        assert "state=discarded" in page.url
        assert page.locator("#jobs tbody tr[data-id]").count() == len(s.discarded)
        assert row_ids(page, "discarded") == row_ids(page)
        assert sorted(row_ids(page)) == sorted(s.discarded)
        # The URL alone reproduces the view: a fresh load of it shows the same rows, ticked box and all.
        page.goto(page.url)
        assert sorted(row_ids(page)) == sorted(s.discarded)
        assert page.is_checked('#filters input[name="state"][value="discarded"]')
    assert problems.seen == []


def test_pause_and_resume_in_the_queues_page_reach_the_database(
    app: App, page: Page, conn: psycopg.Connection[Any],
) -> None:
    s = seed(app)
    problems = Problems(page)

    def paused_at() -> object:
        row = conn.execute(f'SELECT paused_at FROM "{app.schema}".queues WHERE name = %s', ["mail"]).fetchone()
        return None if row is None else row[0]

    with dashboard(app, page) as base_url:
        page.goto(f"{base_url}/queues")
        mail = '#queues tr[data-queue="mail"]'
        assert page.inner_text(f"{mail} td:nth-child(2)") == str(len(s.available))
        assert page.inner_text(f"{mail} td.paused") == "no"
        assert paused_at() is None

        page.click(f"{mail} button:text('Pause')")
        page.wait_for_function(f"document.querySelector('{mail} td.paused')?.textContent.startsWith('since') === true")
        assert paused_at() is not None
        # The other queue is left alone.
        assert page.inner_text('#queues tr[data-queue="default"] td.paused') == "no"

        page.click(f"{mail} button:text('Resume')")
        page.wait_for_function(f"document.querySelector('{mail} td.paused')?.textContent === 'no'")
        assert paused_at() is None
        assert page.locator(f"{mail} button").inner_text() == "Pause"
    assert problems.seen == []


def test_retry_of_a_discarded_job_from_its_page_runs_it(app: App, page: Page, conn: psycopg.Connection[Any]) -> None:
    broken = {"on": True}

    @app.task(name="import_feed", max_attempts=1)
    def import_feed(url: str) -> str:
        if broken["on"]:
            raise ConnectionError(f"{url}: connection refused")
        return f"imported {url}"

    ref = import_feed.delay("https://example.com/feed.xml")
    drain_in_thread(app)
    assert state_of(conn, app, ref.id) == "discarded"
    broken["on"] = False

    problems = Problems(page)
    with dashboard(app, page) as base_url:
        open_live(page, f"{base_url}/jobs/{ref.id}")
        assert page.inner_text("#job-state") == "discarded"
        assert "ConnectionError" in page.inner_text(".attempt summary")
        page.click(".act-retry")
        # The action answers with a redirect to the job's page, which loads afresh.
        page.wait_for_function("document.getElementById('job-state')?.textContent === 'available'")
        assert state_of(conn, app, ref.id) == "available"
        wait_stream_open(page)
        page.evaluate("window.__marker = 1")

        drain_in_thread(app)
        assert state_of(conn, app, ref.id) == "completed"
        # The open page learns of it from its event stream, without a reload.
        page.wait_for_function("document.getElementById('job-state')?.textContent === 'completed'", timeout=5000)
        assert page.inner_text("#result") == '"imported https://example.com/feed.xml"'
        assert page.evaluate("window.__marker") == 1
    assert problems.seen == []


def test_a_job_a_worker_completes_appears_in_an_open_jobs_page_without_a_reload(
    app: App, page: Page, conn: psycopg.Connection[Any],
) -> None:
    @app.task(name="thumbnail")
    def thumbnail() -> None:
        pass

    problems = Problems(page)
    with dashboard(app, page) as base_url:
        open_live(page, f"{base_url}/jobs")
        assert row_ids(page) == []
        page.evaluate("window.__marker = 1")
        job_id, latency = completion_to_row_seconds(page, app, thumbnail, conn)
        print(f"live update: job {job_id} completed -> its completed row in the open page in {latency * 1000:.0f} ms")
        assert 0 < latency < 2.0
        assert page.evaluate("window.__marker") == 1  # the same document: no reload, no navigation
        assert row_ids(page, "completed") == [job_id]
    assert problems.seen == []


def test_a_change_that_arrives_while_the_page_refreshes_still_shows(app: App, page: Page) -> None:
    """A refresh already on its way when the next change comes cannot show that change; the page
    must fetch again after it, not drop it (htmx queues the second request on the element the
    first one replaces)."""

    @app.task(name="ping")
    def ping() -> None:
        pass

    problems = Problems(page)
    held: list[int] = []

    def hold_one_refresh(route: Route) -> None:
        if not route.request.headers.get("hx-request") or held:
            route.continue_()
            return
        response = route.fetch()  # the server's answer, from before the job below exists
        held.append(ping.delay().id)
        # Hold the answer until the job's change event reached the page.
        page.wait_for_function(f"window.__changes > {changes_before}")
        route.fulfill(response=response)

    # No poll within the test: the job's NOTIFY is the only change, so none comes later to mend a lost one.
    with dashboard(app, page, refresh_interval=30) as base_url:
        open_live(page, f"{base_url}/jobs")
        # The feed's LISTEN connection announces a change when it connects (what was sent before
        # is lost to it); let that one pass first.
        page.wait_for_function("window.__changes >= 1")
        changes_before = page.evaluate("window.__changes")
        page.route("**/jobs?*", hold_one_refresh)
        page.route("**/jobs", hold_one_refresh)
        page.evaluate("window.pgtasksDashboard.refresh(['jobs'])")
        page.wait_for_function(f"window.__changes > {changes_before}", timeout=10_000)
        wait_for(lambda: bool(held), timeout=5)
        page.wait_for_selector(f'#jobs tr[data-id="{held[0]}"]', timeout=2000)
    assert problems.seen == []


def test_cancel_everything_matching_a_queue_filter(app: App, page: Page, conn: psycopg.Connection[Any]) -> None:
    s = seed(app)

    @app.task(name="mail.digest", queue="mail")
    def digest(day: int) -> None:
        raise AssertionError("the mail queue is not served in these tests")

    mail = s.available + [digest.delay(d).id for d in range(4)]
    problems = Problems(page)
    with dashboard(app, page) as base_url:
        page.goto(f"{base_url}/jobs?queue=mail")
        assert sorted(row_ids(page)) == sorted(mail)
        page.click(".act-all-cancel")
        page.wait_for_selector("#confirm-text")
        text = " ".join(page.inner_text("#confirm-text").split())
        assert text.startswith(f"Cancel {len(mail)} jobs matching"), text
        assert "queue=mail" in text
        assert page.inner_text("#confirm-button") == f"Cancel {len(mail)}"
        page.click("#confirm-button")
        page.wait_for_selector("#action-result")
        assert page.inner_text("#action-result") == f"{len(mail)} jobs cancelled or asked to cancel"

    states = dict(conn.execute(f'SELECT id, state::text FROM "{app.schema}".jobs').fetchall())
    assert sorted(i for i, st in states.items() if st == "cancelled") == sorted(mail)
    # Nothing outside the filter was touched.
    assert all(states[i] == "scheduled" for i in s.scheduled)
    assert all(states[i] == "discarded" for i in s.discarded)
    assert problems.seen == []


def test_read_only_mode_renders_no_action(app: App, page: Page) -> None:
    s = seed(app)
    problems = Problems(page)
    with dashboard(app, page, read_only=True) as base_url:
        page.goto(f"{base_url}/jobs")
        assert sorted(row_ids(page)) == sorted(s.completed + s.retried + s.discarded + s.available + s.scheduled)
        assert "read-only" in page.inner_text("header")
        assert page.locator("#select-all, input[name=ids], .bulk, [class*=act-]").count() == 0

        page.goto(f"{base_url}/queues")
        assert page.locator('#queues tr[data-queue="mail"]').count() == 1
        assert page.locator("#queues button, #queues form").count() == 0

        page.goto(f"{base_url}/jobs/{s.discarded[0]}")
        assert page.inner_text("#job-state") == "discarded"
        assert page.locator(".actions, [class*=act-], main form").count() == 0
    assert problems.seen == []


def test_the_event_stream_closes_while_the_tab_is_hidden_and_reopens(app: App, page: Page) -> None:
    @app.task(name="ping")
    def ping() -> None:
        pass

    problems = Problems(page)
    guard = asgi_app(app)
    feed = guard.dashboard.feed  # type: ignore[attr-defined]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    def subscribers() -> int:
        # The feed's set of open streams (it has no public count): what the server still holds.
        return len(feed._subscribers)

    with serve(guard) as base_url:
        open_live(page, f"{base_url}/jobs")
        assert page.evaluate("window.__sources.map(s => s.readyState)") == [1]
        wait_for(lambda: subscribers() == 1, timeout=5)

        page.evaluate(SET_HIDDEN, True)
        assert page.evaluate("window.__sources.map(s => s.readyState)") == [2]
        assert page.inner_text("#live-status") == "live: paused while the tab is hidden"
        wait_for(lambda: subscribers() == 0, timeout=5)  # the server let the stream go too

        # A change while hidden: the feed sends it, but this tab is not listening and fetches nothing.
        sent = feed.events_sent
        requests.clear()
        job = ping.delay()
        wait_for(lambda: feed.events_sent > sent, timeout=5)
        time.sleep(0.3)  # a fetch it wrongly made would have started by now
        assert requests == []
        assert row_ids(page) == []

        page.evaluate(SET_HIDDEN, False)
        wait_stream_open(page)
        assert page.evaluate("window.__sources.map(s => s.readyState)") == [2, 1]
        wait_for(lambda: subscribers() == 1, timeout=5)
        # Coming back refreshes at once: the job enqueued meanwhile shows without a reload.
        page.wait_for_selector(f'#jobs tr[data-id="{job.id}"]', timeout=5000)
        page.goto("about:blank")
    assert problems.seen == []


# -- the README's screenshot ------------------------------------------------------------------------

SPREAD_TIMES = """
UPDATE "{schema}".jobs AS j
SET created_at = j.created_at - s.shift, run_at = j.run_at - s.shift,
    attempted_at = j.attempted_at - s.shift, finalized_at = j.finalized_at - s.shift,
    errors = coalesce((SELECT jsonb_agg(jsonb_set(e.value, '{{at}}',
                                                  to_jsonb((e.value ->> 'at')::timestamptz - s.shift)) ORDER BY e.n)
                       FROM jsonb_array_elements(j.errors) WITH ORDINALITY AS e(value, n)), '[]'::jsonb)
FROM unnest(%(ids)s::bigint[], %(shifts)s::float8[]) AS u(id, seconds),
     LATERAL (SELECT make_interval(secs => u.seconds) AS shift) AS s
WHERE j.id = u.id
"""


def realistic_history(app: App, conn: psycopg.Connection[Any]) -> None:
    """A few hundred jobs over the last hour (and a quieter day before it) in two queues, run by a
    real worker, some after retries and some discarded; then moved back in time so the charts have
    a shape. Seeded, so every run draws the same shape (only the clock and the names move)."""
    rng = random.Random(12)
    durations = random.Random(13)  # drawn on the worker's threads, in whatever order they run

    @app.task(name="images.resize", max_attempts=3, retry=pgtasks.Fixed(0))
    def resize(image_id: int, failures: int = 0) -> dict[str, int]:
        time.sleep(durations.uniform(0.002, 0.03))
        attempt = pgtasks.current_job().attempt
        if attempt <= failures:
            raise TimeoutError(f"image {image_id}: storage did not answer (attempt {attempt})")
        return {"image_id": image_id, "width": 640}

    @app.task(name="emails.send", queue="mail", max_attempts=3, retry=pgtasks.Fixed(0))
    def send(to: str, template: str, failures: int = 0) -> None:
        time.sleep(durations.uniform(0.001, 0.01))
        if pgtasks.current_job().attempt <= failures:
            raise ConnectionError(f"smtp: 421 too many connections for {to}")

    def failures() -> int:
        roll = rng.random()
        return 0 if roll < 0.85 else 1 if roll < 0.95 else 5  # 5: more than max_attempts, discarded

    ids: list[int] = []
    for n in range(420):
        if rng.random() < 0.6:
            ids.append(resize.delay(1000 + n, failures=failures()).id)
        else:
            ids.append(send.delay(f"user{n}@example.com", "welcome", failures=failures()).id)
    drain_in_thread(app, queues=["default", "mail"], concurrency=8)

    # Three in four in the last hour, with a busier stretch twenty minutes ago; the rest over the day.
    shifts = []
    for _ in ids:
        if rng.random() < 0.75:
            minutes = rng.gauss(20, 6) if rng.random() < 0.4 else rng.uniform(0.5, 59)
            shifts.append(min(max(minutes, 0.5), 59.5) * 60)
        else:
            shifts.append(rng.uniform(1, 23.8) * 3600)
    conn.execute(SPREAD_TIMES.format(schema=app.schema), {"ids": ids, "shifts": shifts})
    # Work still to do: due later, and waiting in the queue.
    for n in range(12):
        resize.apply_async(args=(5000 + n,), countdown=600 + 60 * n)


def test_overview_screenshot(app: App, chromium: Browser, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    realistic_history(app, conn)
    release = threading.Event()

    @app.task(name="reports.build")
    def build(month: str) -> None:
        release.wait(30)  # running while the picture is taken

    report = build.delay("2024-05")
    update = os.environ.get(UPDATE_SCREENSHOTS) == "1"
    target = SCREENSHOT if update else tmp_path / SCREENSHOT.name
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.add_init_script(TRACK_EVENT_SOURCES)
        problems = Problems(page)
        with worker_thread(app, queues=["default", "mail"], poll_interval=0.5) as worker:
            try:
                wait_for(lambda: is_leader(worker), timeout=15)
                wait_for(lambda: state_of(conn, app, report.id) == "running", timeout=10)
                with dashboard(app, page) as base_url:
                    open_live(page, f"{base_url}/")
                    page.wait_for_selector("#doctor")
                    for chart in ("#chart-hour", "#chart-day"):
                        page.wait_for_function(f"(arg) => ({COUNT_SERIES_PIXELS})(arg) > 0",
                                               arg=[f"{chart} canvas", SERIES_COLOURS])
                    assert "1/10 running · leader" in page.inner_text(".workers")
                    page.screenshot(path=target)
            finally:
                release.set()
        assert problems.seen == []
    finally:
        context.close()

    png = target.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    assert (width, height) == (1280, 800)
    # A blank or half-rendered page compresses to a few kilobytes; charts, tables and text do not.
    assert len(png) > 40_000, len(png)

