"""Lost replies, caused for real: the server commits a worker's statement and the connection dies
before the reply reaches the worker (docs/pgbouncer.md, "Dropped connections and restarts").

The worker's pool goes through tests/tcp_proxy.py, which reads the wire protocol and, for the one
statement it is armed on, withholds the CommandComplete and waits for ReadyForQuery (sent after
the implicit commit) before closing both sides. It then holds the network down, so the test can
see the committed rows while the worker has not heard, and heals it for the worker to recover.
The enqueuing App talks to PostgreSQL directly.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

import psycopg
import pytest

from pgtasks import App
from tests.helpers import jobs, logged, wait_for, worker_thread
from tests.tcp_proxy import FreezableProxy, ReplyMatcher

TASK = "lost_replies.work"
# Generous on a loaded 2-core machine: each wait is for one round trip, a backoff of at most a
# second or two, or a poll (POLL_S); none is a race on the bound.
WAIT_S = 30.0
POLL_S = 0.2


def commits_of(app: App, query: str, marker: str) -> ReplyMatcher:
    """Matches a reply to the named store query that changed at least one row.

    `marker` is a piece of that query's SQL found in no other query, so no other UPDATE on the
    link (a heartbeat, a release, an election) can trigger the drop.
    """
    holders = [name for name, sql in app.store.queries.items() if marker in sql]
    assert holders == [query], f"{marker!r} must identify {query} alone, found in {holders}"

    def matches(sql: str, tag: str) -> bool:
        return marker in sql and tag.startswith("UPDATE ") and tag != "UPDATE 0"

    return matches


FETCH = ("job_fetch_available", "WITH claimable AS (")
OUTCOME = ("job_set_outcome_many", "AS o(id, claims, state, retry_in")


class Runs:
    """Counts each job's runs by argument, from the worker's task threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[int] = collections.Counter()

    def record(self, i: int) -> None:
        with self._lock:
            self._counts[i] += 1

    def counts(self) -> dict[int, int]:
        with self._lock:
            return dict(self._counts)


def enqueue(app: App, n: int) -> dict[int, int]:
    """Enqueue n jobs through the direct App; returns {job id: argument}."""
    @app.task(name=TASK)
    def stub(i: int) -> int:
        raise AssertionError("runs on the worker's App only")

    refs = stub.delay_many([(i,) for i in range(n)])
    return {ref.id: i for i, ref in enumerate(refs)}


def worker_options() -> dict[str, Any]:
    # Polling only (no LISTEN connection beside the pool), and no election: the pool carries
    # nothing but the fetch loop, the completer and the heartbeat.
    return {"concurrency": 10, "listen": False, "poll_interval": POLL_S, "elect": False}


def rows_by_id(conn: psycopg.Connection[Any], schema: str) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in jobs(conn, schema)}


def all_completed(conn: psycopg.Connection[Any], schema: str) -> bool:
    return all(row["state"] == "completed" for row in jobs(conn, schema))


def test_a_fetch_whose_reply_is_lost_after_commit_is_put_back_and_each_job_runs_once(
    app: App, proxied_app: App, proxied: tuple[FreezableProxy, str], conn: psycopg.Connection[Any],
    schema: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """pgbouncer.md: "If a fetch's claims committed but the reply was lost, the worker puts those
    jobs back as soon as it reconnects (`worker.claims_released` ...), attempt given back"."""
    caplog.set_level(logging.INFO, logger="pgtasks")
    proxy = proxied[0]
    runs = Runs()

    @proxied_app.task(name=TASK)
    def work(i: int) -> int:
        runs.record(i)
        return i

    args = enqueue(app, 5)
    drop = proxy.drop_reply(commits_of(app, *FETCH), partition=True)
    with worker_thread(proxied_app, **worker_options()) as worker:
        drop.wait(WAIT_S)
        # The claims committed: every job is the worker's, on its first attempt, and none runs,
        # because the worker never heard of them.
        assert drop.tag == "UPDATE 5"
        lost = rows_by_id(conn, schema)
        assert {i: (r["state"], r["attempted_by"], r["attempt"], r["claims"]) for i, r in lost.items()} == {
            i: ("running", worker.worker_id, 1, 1) for i in args}
        assert runs.counts() == {}
        proxy.heal()
        wait_for(lambda: all_completed(conn, schema), timeout=WAIT_S)
    assert runs.counts() == {i: 1 for i in args.values()}
    done = rows_by_id(conn, schema)
    # Claimed twice (claims 2), but the lost claim's attempt was given back: one attempt, no error.
    assert {i: (r["state"], r["attempt"], r["claims"], r["errors"], r["result"]) for i, r in done.items()} == {
        i: ("completed", 1, 2, [], arg) for i, arg in args.items()}
    released = logged(caplog.records, "worker.claims_released")
    assert [(e["count"], e["job_ids"]) for e in released] == [(5, ",".join(map(str, sorted(args))))]
    assert logged(caplog.records, "job.outcome_rejected") == []


def test_an_outcome_write_whose_reply_is_lost_after_commit_is_retried_as_a_no_op(
    app: App, proxied_app: App, proxied: tuple[FreezableProxy, str], conn: psycopg.Connection[Any],
    schema: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """pgbouncer.md: "An outcome write whose reply was lost is retried; the fence (`claims`,
    `state = 'running'`) makes the retry a no-op, logged as `job.outcome_write_uncertain`"."""
    caplog.set_level(logging.INFO, logger="pgtasks")
    proxy = proxied[0]
    runs = Runs()
    finish = threading.Event()

    @proxied_app.task(name=TASK)
    def work(i: int) -> int:
        runs.record(i)
        finish.wait(WAIT_S)  # all jobs run at once, then finish together into one or a few writes
        return i

    args = enqueue(app, 4)
    drop = proxy.drop_reply(commits_of(app, *OUTCOME), partition=True)
    with worker_thread(proxied_app, **worker_options()):
        wait_for(lambda: runs.counts() == {i: 1 for i in args.values()}, timeout=WAIT_S)
        finish.set()
        drop.wait(WAIT_S)
        # The write committed: exactly the jobs of the dropped batch are completed, the worker
        # has not heard, and the network is down, so nothing else has been written since.
        during = rows_by_id(conn, schema)
        written = sorted(i for i, r in during.items() if r["state"] == "completed")
        assert len(written) == drop.rows >= 1
        assert {i: r["state"] for i, r in during.items() if i not in written} == {
            i: "running" for i in args if i not in written}
        proxy.heal()
        wait_for(lambda: len(logged(caplog.records, "job.outcome_write_uncertain")) >= len(written)
                 and all_completed(conn, schema), timeout=WAIT_S)
    assert runs.counts() == {i: 1 for i in args.values()}  # the retry wrote nothing and ran nothing
    done = rows_by_id(conn, schema)
    assert {i: (r["state"], r["attempt"], r["claims"], r["errors"], r["result"]) for i, r in done.items()} == {
        i: ("completed", 1, 1, [], arg) for i, arg in args.items()}
    uncertain = logged(caplog.records, "job.outcome_write_uncertain")
    assert sorted((e["job_id"], e["claims"], e["state"]) for e in uncertain) == [
        (i, 1, "completed") for i in written]
    assert logged(caplog.records, "job.outcome_rejected") == []
    assert logged(caplog.records, "worker.claims_released") == []
