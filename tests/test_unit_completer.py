"""Unit tests (fakes for the pool and store): how the completer classifies outcomes after retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from pgtasks.core.errors import ConnectionLostError
from pgtasks.core.models import JobState, Outcome
from pgtasks.worker import completer as completer_module
from pgtasks.worker.completer import Completer


class FakePool:
    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[object]:
        yield object()


class ScriptedStore:
    """Fails the first `failures` writes, then reports `written` as the ids that were updated."""

    def __init__(self, failures: int, written: set[int]) -> None:
        self.failures = failures
        self.written = written
        self.calls = 0

    async def ajob_set_outcome_many(self, conn: object, outcomes: Sequence[Outcome]) -> set[int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionLostError("server closed the connection unexpectedly")
        return {o.job_id for o in outcomes} & self.written


def run(store: ScriptedStore, outcomes: list[Outcome]) -> Completer:
    async def main() -> Completer:
        completer = Completer(FakePool(), store)  # type: ignore[arg-type]
        completer.start()
        for outcome in outcomes:
            completer.submit(outcome)
        assert await completer.flush(timeout=10)
        await completer.stop()
        return completer

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(completer_module, "reconnect_delay", lambda failures: 0.0)


def test_a_write_that_failed_is_retried_until_it_lands(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    store = ScriptedStore(failures=3, written={1, 2})
    completer = run(store, [Outcome(1, 1, JobState.COMPLETED), Outcome(2, 1, JobState.COMPLETED)])
    assert (store.calls, completer.written, completer.rejected) == (4, 2, 0)
    assert "completer.failing" in caplog.text and "completer.recovered" in caplog.text


def test_missing_after_a_failed_try_is_uncertain_not_rejected(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgtasks")
    store = ScriptedStore(failures=1, written=set())  # the failed try had in fact committed
    completer = run(store, [Outcome(7, 2, JobState.COMPLETED)])
    assert completer.rejected == 0
    assert "job.outcome_write_uncertain job_id=7" in caplog.text
    assert "job.outcome_rejected" not in caplog.text


def test_missing_on_a_first_try_is_a_rejected_stale_claim(caplog: pytest.LogCaptureFixture) -> None:
    store = ScriptedStore(failures=0, written={1})
    completer = run(store, [Outcome(1, 1, JobState.COMPLETED), Outcome(9, 1, JobState.COMPLETED)])
    assert (completer.written, completer.rejected) == (1, 1)
    assert "job.outcome_rejected job_id=9" in caplog.text
