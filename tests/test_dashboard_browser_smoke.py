"""The vendored front-end files work in a real Chromium: htmx 2 swaps a fragment fetched from the
server, and uPlot (script and stylesheet) draws a chart, all served from pgtasks/dashboard/static/
the way the dashboard serves them."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import ConsoleMessage, Page, Request, Response
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import pgtasks
from tests.browser import serve

# The installed package's directory, so this also checks where the wheel's files land.
STATIC = Path(pgtasks.__file__).parent / "dashboard" / "static"

PAGE = """<!doctype html>
<html>
<head>
  <meta charset="utf-8">
  <title>vendored assets</title>
  <link rel="icon" href="data:,">  <!-- else Chromium asks for /favicon.ico, a 404 on the console -->
  <link rel="stylesheet" href="/static/vendor/uplot/uPlot.min.css">
  <script src="/static/vendor/htmx/htmx.min.js"></script>
  <script src="/static/vendor/uplot/uPlot.iife.min.js"></script>
</head>
<body>
  <button id="load" hx-get="/fragment" hx-target="#out">load</button>
  <div id="out">not loaded</div>
  <div id="chart"></div>
  <script>
    window.chart = new uPlot(
      {width: 480, height: 240, series: [{}, {label: "jobs", stroke: "rgb(0, 0, 255)", width: 3}]},
      [[1, 2, 3], [3, 1, 2]],
      document.getElementById("chart"),
    );
  </script>
</body>
</html>
"""

# How many of the canvas's pixels carry the series' pure blue stroke (axes and grid are grey).
COUNT_BLUE_PIXELS = """() => {
  const canvas = document.querySelector("#chart canvas");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let blue = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 2] > 200 && pixels[i] < 60 && pixels[i + 1] < 60 && pixels[i + 3] > 200) blue++;
  }
  return blue;
}"""


async def index(request: StarletteRequest) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def fragment(request: StarletteRequest) -> HTMLResponse:
    # htmx sends this header on every request it makes; echoing it proves the swap came from htmx.
    return HTMLResponse(f'<b id="swapped">swapped by htmx (HX-Request: {request.headers.get("hx-request")})</b>')


def assets_app() -> Starlette:
    return Starlette(routes=[
        Route("/", index),
        Route("/fragment", fragment),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ])


def test_vendored_htmx_and_uplot_run_in_chromium(page: Page, tmp_path: Path) -> None:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"HTTP {response.status} {response.url}")

    def on_failed(request: Request) -> None:
        problems.append(f"failed: {request.url} {request.failure}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("response", on_response)
    page.on("requestfailed", on_failed)

    with serve(assets_app()) as base_url:
        page.goto(f"{base_url}/")

        version = page.evaluate("window.htmx.version")
        assert isinstance(version, str)
        assert version.startswith("2."), version

        page.click("#load")
        page.wait_for_selector("#swapped")
        assert page.inner_text("#out") == "swapped by htmx (HX-Request: true)"

        # uPlot draws on a later frame; wait for the line, then check it is the chart given.
        page.wait_for_function(f"({COUNT_BLUE_PIXELS})() > 0")
        assert page.locator("#chart canvas").count() == 1
        assert page.evaluate("window.chart.data") == [[1, 2, 3], [3, 1, 2]]
        # Two 3 px segments across the plot are ~1250 such pixels at this size; none without the series.
        assert page.evaluate(f"({COUNT_BLUE_PIXELS})()") > 300
        # The stylesheet applied: it is what positions the overlay over the canvas.
        assert page.eval_on_selector("#chart .u-over", "e => getComputedStyle(e).position") == "absolute"
        assert page.eval_on_selector("#chart .uplot", "e => getComputedStyle(e).boxSizing") == "border-box"

        # Left for a person (or a failing run) to look at; the checks above do not read it.
        page.screenshot(path=tmp_path / "vendored-assets.png", full_page=True)

    assert problems == []
