"""Property: any argument value either reaches the task exactly as it was given (same types, same
values, through .delay(), PostgreSQL's jsonb column and a real worker), or is refused at .delay()
with TaskArgumentError and nothing is inserted; and it is refused exactly when it holds something
JSON or jsonb cannot keep (NaN or infinity, a NUL character, a lone surrogate).

One worker runs for all examples, on the direct connection (the fast path; the pools are covered by
tests/test_bad_input.py), and each example waits for its own job on an Event.
"""

from __future__ import annotations

import math
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from pgtasks import App, TaskArgumentError
from tests.helpers import worker_thread

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402 - after the skip that names the extra
from hypothesis import strategies as st  # noqa: E402

# Every code point, lone surrogates and NUL included: hypothesis leaves surrogates out by default.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
# What an unannotated or `Any` parameter receives back: plain JSON values (docs/tasks.md).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


def unkeepable(value: Any) -> bool:
    """The oracle: does `value` hold something JSON or jsonb cannot keep exactly?"""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(unkeepable(v) for v in value)
    if isinstance(value, dict):
        return any(unkeepable(k) or unkeepable(v) for k, v in value.items())
    return False


def same(sent: Any, received: Any) -> bool:
    """Equal and of the same type all the way down (an int for a float, or a str for a datetime, is
    not the same). -0.0 == 0.0 here: jsonb numbers have no negative zero (docs/tasks.md)."""
    if type(sent) is not type(received):
        return False
    if isinstance(sent, dict):
        return bool(sent.keys() == received.keys()) and all(same(v, received[k]) for k, v in sent.items())
    if isinstance(sent, list):
        return len(sent) == len(received) and all(same(a, b) for a, b in zip(sent, received, strict=True))
    if isinstance(sent, datetime):
        return bool(sent == received and sent.utcoffset() == received.utcoffset())
    return bool(sent == received)


class Echo:
    """The task's side: what each job received, and an Event per job token."""

    def __init__(self) -> None:
        self.received: dict[str, dict[str, Any]] = {}
        self.arrived: dict[str, threading.Event] = {}

    def expect(self) -> str:
        token = uuid.uuid4().hex
        self.arrived[token] = threading.Event()
        return token

    def record(self, token: str, **values: Any) -> None:
        self.received[token] = values
        self.arrived[token].set()


def test_arguments_round_trip_exactly_or_are_refused(app: App, conn: psycopg.Connection[Any]) -> None:
    echo = Echo()

    @app.task(name="echo")
    def echo_task(token: str, value: Any, number: float, text: str, blob: bytes, when: datetime) -> None:
        echo.record(token, value=value, number=number, text=text, blob=blob, when=when)

    inserted = 0

    @settings(max_examples=50, deadline=None, database=None,
              # one app and one worker serve every example on purpose; the database makes it slow-ish
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(value=JSON_VALUES, number=st.floats(), text=ANY_TEXT, blob=st.binary(max_size=16),
           when=st.datetimes(timezones=ZONES))
    def round_trip(value: Any, number: float, text: str, blob: bytes, when: datetime) -> None:
        nonlocal inserted
        sent = {"value": value, "number": number, "text": text, "blob": blob, "when": when}
        token = echo.expect()
        try:
            echo_task.delay(token, **sent)
        except TaskArgumentError:
            assert any(unkeepable(v) for v in sent.values()), f"refused a value jsonb keeps: {sent!r}"
            assert conn.execute(f'SELECT count(*) FROM "{app.schema}".jobs').fetchone() == (inserted,)
            return
        inserted += 1
        assert not any(unkeepable(v) for v in sent.values()), f"accepted a value jsonb cannot keep: {sent!r}"
        assert echo.arrived[token].wait(30), "the worker did not run the job within 30s"
        received = echo.received[token]
        for name, value_sent in sent.items():
            assert same(value_sent, received[name]), f"{name}: sent {value_sent!r}, the task got {received[name]!r}"

    with worker_thread(app, queues=["default"], poll_interval=0.05):
        round_trip()
