"""Dashboard live-update latency: a job a worker completes, until its row shows completed in a jobs
page open in Chromium, without a reload.

One dashboard (served by uvicorn on 127.0.0.1, LISTEN on the test database) and one page on
/jobs; each run enqueues a no-op job, waits until the page lists it, completes it with a burst
worker and takes the time from the job's finalized_at (now() of the completing transaction, at or
before its commit) to the moment the completed row entered the page's DOM. Both clocks are this
host's. The measurement is tests/live_latency.py's, the one tests/test_dashboard_browser.py
bounds at 2 s. Needs Debian's Chromium (/usr/bin/chromium) and the dev dependencies.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import psycopg
from bench_common import base_parser
from playwright.sync_api import sync_playwright

# The browser support lives with the tests; run from anywhere, this script finds them by path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgtasks.dashboard import asgi_app
from pgtasks.ops import bench
from tests.browser import launch_chromium, serve
from tests.live_latency import completion_to_row_seconds


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.set_defaults(repeat=10)
    args = parser.parse_args(argv)
    latencies: list[float] = []
    with bench.throwaway_app(args.database_url) as app, psycopg.connect(args.database_url, autocommit=True) as conn:
        @app.task(name="bench.noop")
        def noop() -> None:
            pass

        guard = asgi_app(app)
        with sync_playwright() as playwright, serve(guard) as base_url:
            browser = launch_chromium(playwright)
            page = browser.new_page()
            page.goto(f"{base_url}/jobs")
            # The first hello starts the dashboard's feed; measure from a subscribed page only.
            page.wait_for_function("document.getElementById('live-status')?.textContent.startsWith('live: pushed')")
            page.evaluate("window.__marker = 1")
            for run in range(args.repeat):
                job_id, seconds = completion_to_row_seconds(page, app, noop, conn)
                latencies.append(seconds * 1000)
                print(f"run {run + 1}: job {job_id} completed -> row in {latencies[-1]:.0f} ms", file=sys.stderr)
            if page.evaluate("window.__marker") != 1:
                raise RuntimeError("the page reloaded during the runs: that is not a live update")
            mode = guard.dashboard.feed.mode  # type: ignore[attr-defined]
            page.close()  # before serve() ends: an open event stream would hold its shutdown
            browser.close()
    print(json.dumps({
        "workload": "dashboard_live", "runs": len(latencies), "feed": mode,
        "median_ms": round(statistics.median(latencies), 1), "max_ms": round(max(latencies), 1),
        "runs_ms": [round(x, 1) for x in latencies],
    }), flush=True)


if __name__ == "__main__":
    main()
