"""Real-browser test support for the dashboard: serve an ASGI app on a local port, and launch
Debian's Chromium through Playwright (the `chromium` and `page` fixtures in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from playwright.sync_api import Browser, Playwright
from starlette.types import ASGIApp

from tests.requirements import unavailable

# Debian's build (.ci/run installs it). Playwright's own browser download needs a CDN that the CI
# machine cannot reach, so `playwright install` is never part of the setup.
CHROMIUM = Path("/usr/bin/chromium")

# Generous for a loaded 2-core machine; a healthy start takes a few milliseconds.
STARTUP_TIMEOUT = 10.0
# Bounds how long leaving serve() waits for requests still open (a page left polling or streaming).
GRACEFUL_SHUTDOWN = 3  # seconds; uvicorn takes a whole number


@contextlib.contextmanager
def serve(asgi_app: ASGIApp) -> Iterator[str]:
    """Run `asgi_app` under uvicorn on 127.0.0.1 in a daemon thread; yield its base URL.

    No lifespan events are sent: the dashboard is meant to be mounted inside the user's app, and a
    mounted sub-app never receives them, so its tests must not depend on them either.
    Leaving waits for open requests up to GRACEFUL_SHUTDOWN, then cancels them: close a page that
    holds a stream (EventSource, a long poll) before leaving, or each such test pays that wait.
    """
    # Bind the port here and hand uvicorn the socket: asking the OS for a free port and binding it
    # later would race other test sessions on the same machine for that port.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        asgi_app,
        lifespan="off",
        http="h11",
        # No websocket protocol is loaded: the dashboard uses none, and importing one warns
        # (the suite turns warnings into errors, which would kill the server thread).
        ws="none",
        # None leaves the process's logging configuration alone; uvicorn's loggers still propagate
        # to pytest's capture.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=GRACEFUL_SHUTDOWN + 5.0)
        listener.close()  # uvicorn closes it on a normal shutdown; this covers a failed start
    if thread.is_alive():
        raise RuntimeError(f"the test server on port {port} did not stop within {GRACEFUL_SHUTDOWN + 5} s")


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    """Return once uvicorn listens (it sets `started` after opening the socket); raise if it died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        # uvicorn ends a failed start with sys.exit(), which a thread swallows silently.
        if not thread.is_alive():
            raise RuntimeError("the test server exited during startup (see the captured uvicorn.error log)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test server did not start within {STARTUP_TIMEOUT:.0f} s")
        time.sleep(0.01)


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless; skips (fails under PGTASKS_REQUIRE_ALL=1) when it is not installed."""
    if not CHROMIUM.exists():
        unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    # --no-sandbox: the tests run as root, where Chromium refuses to start sandboxed; the browser
    # only ever loads pages the test itself serves on 127.0.0.1.
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
