"""Unit tests (no database): enqueue option validation, retry policies, named-query loading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgtasks.core.errors import ConfigurationError
from pgtasks.core.options import EnqueueOptions, build_row
from pgtasks.core.retry import Backoff, Fixed
from pgtasks.storage.queries import expand_includes, parse_named_queries, queries_for, validate_schema_name

DEFAULTS = EnqueueOptions(queue="default", priority=0, max_attempts=20)


def row(**options: object) -> object:
    return build_row("t", "{}", EnqueueOptions(**options), DEFAULTS)  # type: ignore[arg-type]


def test_countdown_and_timedelta_become_seconds() -> None:
    assert build_row("t", "{}", EnqueueOptions(countdown=timedelta(minutes=2)), DEFAULTS).delay == 120.0
    assert build_row("t", "{}", EnqueueOptions(countdown=5), DEFAULTS).delay == 5.0


def test_options_override_task_defaults() -> None:
    r = build_row("t", "{}", EnqueueOptions(queue="mail", priority=5), DEFAULTS)
    assert (r.queue, r.priority, r.max_attempts) == ("mail", 5, 20)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"countdown": 1, "eta": datetime.now(UTC)}, "either countdown= or eta="),
        ({"eta": datetime(2030, 1, 1)}, "naive datetime"),
        ({"expires": datetime(2030, 1, 1)}, "naive datetime"),
        ({"countdown": -1}, "must not be negative"),
        ({"countdown": "soon"}, "expected seconds"),
        ({"priority": 40000}, "priority=40000"),
        ({"priority": True}, "priority=True"),
        ({"queue": ""}, "queue=''"),
        ({"max_attempts": 0}, "max_attempts=0"),
        ({"unique_key": ""}, "unique_key=''"),
    ],
)
def test_bad_options_are_rejected_with_the_value(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        row(**options)


def test_backoff_grows_caps_and_jitters() -> None:
    policy = Backoff(base=1, factor=2, max_delay=10, jitter=0.5)
    assert 0.5 <= policy.delay(1) <= 1
    assert 4 <= policy.delay(4) <= 8
    assert 5 <= policy.delay(1000) <= 10
    assert Fixed(3).delay(99) == 3


@pytest.mark.parametrize("kwargs", [{"base": -1}, {"factor": 0.5}, {"max_delay": 0.1}, {"jitter": 2}])
def test_backoff_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**kwargs)


def test_named_queries_parse_and_render_for_a_schema() -> None:
    parsed = parse_named_queries("-- name: a\nSELECT 1\n\n-- name: b\nSELECT {schema}.x")
    assert parsed == {"a": "SELECT 1", "b": "SELECT {schema}.x"}
    rendered = queries_for("my_schema")
    assert '"my_schema".jobs' in rendered["job_fetch_available"]
    assert all("{schema}" not in text for text in rendered.values())


def test_fragments_are_included_where_named_and_never_listed_as_queries() -> None:
    sections = {"_where": "x = 1 AND y = 2", "q": "SELECT 1 WHERE {include:_where}",
                "r": "DELETE WHERE {include:_where}"}
    assert expand_includes(sections) == {"q": "SELECT 1 WHERE x = 1 AND y = 2", "r": "DELETE WHERE x = 1 AND y = 2"}
    with pytest.raises(ValueError, match="no fragment named '_nope'"):
        expand_includes({"q": "SELECT {include:_nope}"})
    rendered = queries_for("my_schema")
    assert not any(name.startswith("_") for name in rendered)
    assert all("{include:" not in text for text in rendered.values())
    assert "created_from" in rendered["dashboard_job_match_count"]


@pytest.mark.parametrize("name", ["", "Public", "a-b", "x" * 51, 'x"; drop table y; --', "1abc"])
def test_schema_names_must_be_plain_identifiers(name: str) -> None:
    with pytest.raises(ConfigurationError, match="not a valid pgtasks schema name"):
        validate_schema_name(name)
