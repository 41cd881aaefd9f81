"""The dashboard under failure and abuse: the database down and back, forged names and origins,
retries that would break a unique key, an action that fails part-way, framing and websockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pgtasks import App, DatabaseError
from pgtasks.dashboard import actions, asgi_app, data, live
from pgtasks.dashboard.data import TimedCache
from pgtasks.dashboard.live import LiveFeed
from tests.helpers import logged, wait_for
from tests.servers import PrivateServer


def form(client: TestClient, **fields: Any) -> dict[str, Any]:
    client.get("/jobs")
    return {"csrf": client.cookies["pgtasks_csrf"], **fields}


@pytest.fixture
def jobs_app(app: App) -> App:
    @app.task(name="hardening.noop")
    def noop(n: int) -> None:
        return None

    noop.delay(1)
    return app


# -- the database down, and back ---------------------------------------------------------------------


@pytest.fixture
def outage_app(private_server: PrivateServer) -> Iterator[App]:
    application = App(private_server.dsn, schema=f"dash_outage_{uuid.uuid4().hex[:8]}")
    application.migrate()
    yield application
    private_server.start()
    with private_server.connect() as conn:
        conn.execute(f"DROP SCHEMA {application.schema} CASCADE")
    application.close()


def test_pages_say_the_database_is_unreachable_and_recover(outage_app: App, private_server: PrivateServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "CONNECT_TIMEOUT", 1.0)  # 5 s in production: each page below waits it out
    with TestClient(asgi_app(outage_app)) as client:
        assert client.get("/jobs").status_code == 200
        private_server.stop()
        for path in ("/jobs", "/", "/queues", "/jobs/1"):
            started = time.monotonic()
            response = client.get(path)
            took = time.monotonic() - started
            assert response.status_code == 503, (path, response.status_code, response.text[:300])
            assert 'id="problem"' in response.text and "Traceback" not in response.text
            assert took < 6, f"{path}: {took:.1f} s to say the database is down"
        private_server.start()
        wait_for(lambda: client.get("/jobs").status_code == 200, timeout=20, interval=0.2)


def test_the_feed_detects_again_once_the_database_answers(outage_app: App, private_server: PrivateServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "REDETECT_AFTER", 0.5)
    feed = LiveFeed(outage_app.database, outage_app.store, refresh_interval=0.2)

    async def scenario() -> tuple[str, str, str]:
        private_server.stop()
        await feed.subscribe()
        first = (feed.mode, feed.reason)
        await asyncio.to_thread(private_server.start)
        with contextlib.suppress(AssertionError):  # the assertion below says what the mode was
            await asyncio.to_thread(wait_for, lambda: feed.mode == "push", 20, 0.1)
        await feed.aclose()
        return first[0], first[1], feed.mode

    first_mode, first_reason, final_mode = asyncio.run(scenario())
    assert first_mode == "poll" and "detecting again" in first_reason
    assert final_mode == "push"


def test_a_failed_computation_is_remembered_briefly_so_waiting_requests_fail_at_once() -> None:
    cache = TimedCache()
    calls = 0

    def failing() -> int:
        nonlocal calls
        calls += 1
        time.sleep(0.5)
        raise DatabaseError("down")

    errors: list[float] = []
    started = time.monotonic()

    def request() -> None:
        with pytest.raises(DatabaseError):
            cache.get("overview", 10.0, failing)
        errors.append(time.monotonic() - started)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 1 and max(errors) < 1.5  # not 4 x 0.5 s, one after the other
    cache.clear()  # an action: the next request tries again
    with pytest.raises(DatabaseError):
        cache.get("overview", 10.0, failing)
    assert calls == 2


# -- forged names and origins -------------------------------------------------------------------------


def test_the_audit_line_never_names_a_user_from_an_unchecked_header(jobs_app: App,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(asgi_app(jobs_app, authorize=lambda request: True)) as client:
        forged = {"Authorization": "Basic " + base64.b64encode(b"the-ceo:x").decode()}
        with caplog.at_level(logging.INFO, logger="pgtasks.dashboard"):
            response = client.post("/queues/pause", data=form(client, queue="default"), headers=forged,
                                   follow_redirects=False)
        assert response.status_code == 303
    lines = logged(caplog.records, "dashboard.action")
    assert len(lines) == 1 and str(lines[0]["who"]).startswith("anonymous@")


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Sec-Fetch-Site": "cross-site"}], ids=["origin", "same-site", "cross-site"])
def test_a_post_from_another_origin_is_refused_even_with_the_token(jobs_app: App, conn: psycopg.Connection[Any],
                                                                   headers: dict[str, str]) -> None:
    with TestClient(asgi_app(jobs_app)) as client:
        response = client.post("/queues/pause", data=form(client, queue="default"), headers=headers,
                               follow_redirects=False)
        assert response.status_code == 403, response.text[:300]
        assert 'id="problem"' in response.text
        same = client.post("/queues/pause", data=form(client, queue="other"),
                           headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
                           follow_redirects=False)
        assert same.status_code == 303
    paused = {r[0] for r in conn.execute(f"SELECT name FROM {jobs_app.schema}.queues WHERE paused_at IS NOT NULL")}
    assert paused == {"other"}


def test_every_response_forbids_framing_by_other_sites_and_websockets_are_refused(jobs_app: App) -> None:
    with TestClient(asgi_app(jobs_app)) as client:
        for path in ("/", "/jobs", "/static/dashboard.js"):
            headers = client.get(path).headers
            assert headers["x-frame-options"] == "SAMEORIGIN", path
            assert headers["content-security-policy"] == "frame-ancestors 'self'", path
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/events"):
            pass
        assert refused.value.code == 1008


# -- retries and a bulk action that fails part-way ----------------------------------------------------


def test_retrying_finished_jobs_that_share_a_unique_key_retries_the_newest_only(app: App,
                                                                               conn: psycopg.Connection[Any]) -> None:
    @app.task(name="hardening.once")
    def once(n: int) -> None:
        return None

    ids = [once.apply_async(args=(n,), unique_key="k1").id for n in range(1)]
    conn.execute(f"UPDATE {app.schema}.jobs SET state = 'discarded', finalized_at = now() WHERE id = %s", [ids[0]])
    ids.append(once.apply_async(args=(2,), unique_key="k1").id)
    conn.execute(f"UPDATE {app.schema}.jobs SET state = 'discarded', finalized_at = now() WHERE id = %s", [ids[1]])
    with TestClient(asgi_app(app)) as client:
        done = client.post("/jobs/action", data=form(client, action="retry", scope="selection", ids=ids,
                                                     confirm="2"))
    assert done.status_code == 200, done.text[:500]
    assert "1 job retried; 1 left as they were" in done.text
    states = dict(conn.execute(f"SELECT id, state::text FROM {app.schema}.jobs ORDER BY id").fetchall())
    assert states == {ids[0]: "discarded", ids[1]: "available"}


def test_a_bulk_action_that_fails_part_way_still_logs_its_audit_line(jobs_app: App, monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(actions, "BATCH", 1)
    real = jobs_app.store.dashboard_job_delete_many
    calls = 0

    def second_batch_fails(conn: psycopg.Connection[Any], ids: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise DatabaseError("the second batch was refused")
        return real(conn, ids)

    monkeypatch.setattr(jobs_app.store, "dashboard_job_delete_many", second_batch_fails)
    with caplog.at_level(logging.INFO, logger="pgtasks.dashboard"), pytest.raises(DatabaseError):
        actions.run_on_ids(jobs_app, "delete", [10**6, 10**6 + 1, 10**6 + 2], who="ops")
    lines = logged(caplog.records, "dashboard.action")
    assert len(lines) == 1
    assert lines[0]["requested"] == 3 and lines[0]["affected"] == 0
    assert lines[0]["error"] == "DatabaseError: the second batch was refused"


def test_a_feed_used_from_another_event_loop_stops_the_old_loops_listener(jobs_app: App,
                                                                         conn: psycopg.Connection[Any]) -> None:
    feed = LiveFeed(jobs_app.database, jobs_app.store, refresh_interval=0.2, listen=True)
    name = jobs_app.database.application_name + "-dashboard-listener"

    def listeners() -> int:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]).fetchone()
        return int(row[0]) if row else 0

    # Loop A keeps running in its own thread, as a server's loop does, while loop B takes the feed over.
    loop_a = asyncio.new_event_loop()
    thread = threading.Thread(target=loop_a.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(feed.subscribe(), loop_a).result(timeout=20)
        wait_for(lambda: listeners() == 1, timeout=10, interval=0.05)

        async def on_loop_b() -> None:
            await feed.subscribe()
            await asyncio.to_thread(wait_for, lambda: listeners() == 1 and feed.mode == "push", 10, 0.05)
            await asyncio.sleep(0.5)  # the old loop's listener had time to linger, if it were not stopped
            assert listeners() == 1
            await feed.aclose()

        asyncio.run(on_loop_b())
    finally:
        loop_a.call_soon_threadsafe(loop_a.stop)
        thread.join(timeout=5)
        loop_a.close()
    wait_for(lambda: listeners() == 0, timeout=10, interval=0.05)
