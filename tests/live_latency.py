"""How long after a worker commits a job's completion an open dashboard jobs page shows it.

Shared by tests/test_dashboard_browser.py (one measurement, bounded) and benchmarks/dashboard_live.py
(repeated, median and max). Both ends are read on the same host's wall clock: the browser stamps
the moment the completed row enters the DOM (performance.timeOrigin + now()), and the database's
finalized_at is now() of the completing transaction, which is at or before its commit. So the
figure is never an underestimate.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from playwright.sync_api import Page

from pgtasks import App, Task, Worker
from tests.helpers import drain

# Disconnects the previous watcher, so repeated measurements on one page do not pile observers up.
WATCH_COMPLETED_ROW = """(id) => {
  if (window.__completedWatch) window.__completedWatch.disconnect();
  const selector = `#jobs tr[data-id="${id}"][data-state="completed"]`;
  window.__completedSeenAt = null;
  const check = () => {
    if (window.__completedSeenAt === null && document.querySelector(selector)) {
      window.__completedSeenAt = performance.timeOrigin + performance.now();
    }
  };
  window.__completedWatch = new MutationObserver(check);
  window.__completedWatch.observe(document.documentElement, {childList: true, subtree: true});
  check();
}"""


def drain_in_thread(app: App, **options: Any) -> Worker:
    """tests.helpers.drain() on a thread of its own: Playwright's sync API keeps an event loop
    marked running on the test's thread, where asyncio.run() refuses to start another."""
    done: list[Worker] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(drain(app, **options))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="pgtasks-test-drain")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return done[0]


def completion_to_row_seconds(page: Page, app: App, task: Task[Any, Any], conn: psycopg.Connection[Any],
                              *, timeout: float = 10.0) -> tuple[int, float]:
    """Enqueue `task()`, wait until the open jobs page lists it, complete it with a burst worker in
    this process, and return (job id, seconds from its completion to its completed row in the page).

    `page` must show the jobs page with its event stream open. Waiting for the waiting row first
    keeps the insert's own refresh out of the measurement: what is timed is the completion alone.
    """
    ref = task.delay()
    page.evaluate(WATCH_COMPLETED_ROW, ref.id)
    page.wait_for_selector(f'#jobs tr[data-id="{ref.id}"]', timeout=timeout * 1000)
    drain_in_thread(app)
    row = conn.execute(f'SELECT state::text, finalized_at FROM "{app.schema}".jobs WHERE id = %s',
                       [ref.id]).fetchone()
    assert row is not None and row[0] == "completed", row
    page.wait_for_function("window.__completedSeenAt !== null", timeout=timeout * 1000)
    seen_ms = page.evaluate("window.__completedSeenAt")
    assert isinstance(seen_ms, int | float)
    return ref.id, seen_ms / 1000 - row[1].timestamp()
