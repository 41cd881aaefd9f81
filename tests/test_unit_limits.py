"""Limits as declared in code (pgtasks/core/limits.py): spelling, validation, keys. No database."""

from __future__ import annotations

import pytest

from pgtasks import Limit
from pgtasks.core.errors import ConfigurationError, TaskArgumentError
from pgtasks.core.limits import Bucket, QueueLimits, Rate, default_burst, parse_rate, task_limits


@pytest.mark.parametrize(("text", "per_second"), [("10/s", 10.0), ("100/m", 100 / 60), ("5/h", 5 / 3600),
                                                  ("30/5m", 30 / 300), ("2.5/s", 2.5), (" 1 / minute ", 1 / 60)])
def test_rates_in_celerys_spelling(text: str, per_second: float) -> None:
    assert parse_rate(text).per_second == pytest.approx(per_second)


@pytest.mark.parametrize("bad", ["10", "10/d", "-1/s", "0/s", "ten/s", "", 10])
def test_a_bad_rate_names_the_value_and_the_spelling(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"rate_limit=.*expected a rate like '10/s'|must be positive"):
        parse_rate(bad)  # type: ignore[arg-type]


def test_the_default_burst_is_a_tenth_of_a_seconds_tokens_and_at_least_one() -> None:
    assert [default_burst(parse_rate(r)) for r in ("1/s", "10/s", "100/m", "1000/s")] == [1, 1, 1, 100]
    assert str(Rate(100, 60)) == "100/m" and str(Rate(2.5, 1)) == "2.5/s"


def test_task_limits_normalise_each_spelling() -> None:
    assert task_limits(None, None) is None
    whole = task_limits(5, "10/s")
    assert whole is not None and (whole.concurrency, whole.rate, whole.key) == (5, Bucket(10.0, 1), None)
    keyed = task_limits(Limit(max=1, key="customer"), Limit(rate="6/m", key="customer", burst=2))
    assert keyed is not None
    assert (keyed.concurrency, keyed.key_concurrency, keyed.key_rate, keyed.key_name) == (
        None, 1, Bucket(0.1, 2), "customer")
    assert task_limits(Limit(max=3), None) == task_limits(3, None)


@pytest.mark.parametrize(("concurrency", "rate_limit", "message"), [
    (0, None, "concurrency=0: expected a positive whole number"),
    (True, None, "concurrency=True"),
    (Limit(rate="1/s"), None, "give Limit\\(max=..., key=...\\) here; a rate goes in rate_limit="),
    (None, Limit(max=2), "give Limit\\(rate=..., key=...\\) here"),
    (Limit(max=1, key="a"), Limit(rate="1/s", key="b"), "use different keys"),
])
def test_contradictory_or_bad_task_limits_fail_at_decoration(concurrency: object, rate_limit: object,
                                                             message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        task_limits(concurrency, rate_limit)  # type: ignore[arg-type]


def test_a_limit_needs_something_to_limit_and_a_burst_needs_a_rate() -> None:
    with pytest.raises(ConfigurationError, match="give max="):
        Limit()
    with pytest.raises(ConfigurationError, match="without rate="):
        Limit(max=1, burst=3)
    with pytest.raises(ConfigurationError, match="Limit\\(key=3\\)"):
        Limit(max=1, key=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="burst=2 without a rate"):
        QueueLimits.create(1, None, 2)


def test_a_key_is_the_arguments_value_as_json() -> None:
    by_name = task_limits(Limit(max=1, key="customer"), None)
    by_function = task_limits(Limit(max=1, key=lambda a: a["order"]["shop"]), None)
    assert by_name is not None and by_function is not None
    assert by_name.key_of("t", {"customer": 1}) == "1"
    assert by_name.key_of("t", {"customer": "1"}) == '"1"'  # a string key and a number key differ
    assert by_function.key_of("t", {"order": {"shop": "x"}}) == '"x"'
    with pytest.raises(TaskArgumentError, match="cannot be stored"):
        by_name.key_of("t", {"customer": object()})
    with pytest.raises(TaskArgumentError, match="keep it under 512"):
        by_name.key_of("t", {"customer": "x" * 600})
