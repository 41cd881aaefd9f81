"""The chaos tier (`-m slow`): the in-flight faults of tests/test_inflight_faults.py, repeated,
while thousands of jobs drain and a producer keeps enqueueing.

Each fault strikes five times, each time once another fifth of the backlog completed, so jobs
are always running, claimed ahead and being recorded when it does. What must hold at the end:
every job that exists completed and ran exactly once (no claim was lost or run twice; the worker
does not elect, so only its own put-back could take a job back), and every batch the producer
enqueued exists whole or not at all: a `delay_many()` that raised ConnectionLostError may have
committed (a PgBouncer restart leaves its INSERT running on the server), one that returned did.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field

import pytest

from pgtasks import ConnectionLostError
from tests.helpers import wait_for
from tests.servers import Fault, PrivateServer
from tests.test_inflight_faults import (
    RECOVERY_S,
    Scenario,
    completed,
    errors_logged,
    job_rows,
    running_worker,
    scenario,
    wait_completed,
)

pytestmark = pytest.mark.slow

BACKLOG = 3000
STRIKES = 5
BATCH = 100


@dataclass
class Producer:
    """Enqueues quick(k) batches of BATCH on a thread until stopped; remembers how each call ended."""

    sc: Scenario
    first_key: int
    returned: list[int] = field(default_factory=list)  # first key of each batch whose call returned
    lost: list[int] = field(default_factory=list)  # ... whose call raised ConnectionLostError
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        key = self.first_key
        while not self.stop.is_set():
            try:
                self.sc.producer.tasks["quick"].delay_many([(k,) for k in range(key, key + BATCH)])
                self.returned.append(key)
            except ConnectionLostError:
                self.lost.append(key)
            key += BATCH
            self.stop.wait(0.05)


def wait_at_least(server: PrivateServer, schema: str, count: int) -> None:
    wait_for(lambda: completed(server, schema) >= count, timeout=RECOVERY_S)


def test_repeated_faults_while_thousands_of_jobs_drain(
    fault: Fault, private_server: PrivateServer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    with scenario(fault.dsn, private_server) as sc:
        sc.producer.tasks["quick"].delay_many([(k,) for k in range(BACKLOG)])
        producer = Producer(sc, first_key=BACKLOG)
        thread = threading.Thread(target=producer.run, name="chaos-producer")
        with running_worker(sc, concurrency=8):
            thread.start()
            try:
                for strike in range(1, STRIKES + 1):
                    wait_at_least(private_server, sc.schema, strike * BACKLOG // (STRIKES + 1))
                    fault.cut(sc.name)
                    fault.restore()
            finally:
                producer.stop.set()
                thread.join(RECOVERY_S)
            rows = job_rows(private_server, sc.schema)
            wait_completed(private_server, sc.schema, len(rows), timeout=RECOVERY_S * 2)
            rows = job_rows(private_server, sc.schema)
    keys = collections.Counter(r["args"]["k"] for r in rows)
    assert set(keys.values()) == {1}, "a job was enqueued twice"
    batches = {first: sum(1 for k in range(first, first + BATCH) if k in keys)
               for first in producer.returned + producer.lost}
    assert {first: batches[first] for first in producer.returned} == {first: BATCH for first in producer.returned}
    assert all(batches[first] in (0, BATCH) for first in producer.lost), batches  # whole or not at all
    assert sc.gates.runs == {k: 1 for k in keys}  # every job that exists ran, and exactly once
    assert {r["state"] for r in rows} == {"completed"}
    assert errors_logged(caplog) == []
