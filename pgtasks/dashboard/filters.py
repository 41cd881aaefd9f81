"""The jobs and workflows pages' filters: parsed from the URL's query string and written back into links.

Every filter lives in the URL, so a link reproduces the view. Parsing is strict: a value that
cannot be a filter is a `FilterError` naming the parameter, the value and what it accepts,
shown on the page instead of a silently wider or empty list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urlencode

from pgtasks.client.workflows import WORKFLOW_STATES
from pgtasks.core.models import JobState
from pgtasks.storage.dashboard import JobQuery

STATES = tuple(s.value for s in JobState)
PAGE_SIZES = (20, 50, 100, 200)
MAX_ID = 2**63 - 1  # jobs.id is a bigint: a larger id or cursor would fail inside the query
DEFAULT_PAGE_SIZE = 50


class FilterError(ValueError):
    """A query-string value that is not a valid filter."""


@dataclass(frozen=True, slots=True)
class JobFilter:
    states: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None
    search: str = ""
    before: int | None = None
    limit: int = DEFAULT_PAGE_SIZE
    _query: JobQuery = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_query", _to_query(self))

    @property
    def query(self) -> JobQuery:
        """The filters as the store's query parameters (the cursor and page size apart)."""
        return self._query

    @property
    def is_empty(self) -> bool:
        """No filter but the cursor: "everything matching" would mean every job."""
        return not (self.states or self.queues or self.tasks or self.created_from or self.created_to or self.search)

    def to_params(self, *, cursor: bool = True) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = [("state", s) for s in self.states]
        params += [("queue", q) for q in self.queues] + [("task", t) for t in self.tasks]
        if self.created_from:
            params.append(("from", self.created_from.isoformat()))
        if self.created_to:
            params.append(("to", self.created_to.isoformat()))
        if self.search:
            params.append(("q", self.search))
        return params + _paging(self.limit, self.before if cursor else None)

    def url_query(self, *, cursor: bool = True) -> str:
        return urlencode(self.to_params(cursor=cursor))

    def with_cursor(self, before: int | None) -> JobFilter:
        return replace(self, before=before)


def _paging(limit: int, before: int | None) -> list[tuple[str, str]]:
    """The page size (when not the default) and the keyset cursor, as URL parameters."""
    params = [("limit", str(limit))] if limit != DEFAULT_PAGE_SIZE else []
    return params + ([("before", str(before))] if before is not None else [])


def _page_size(params: Mapping[str, Sequence[str]]) -> int:
    limit = _int(params, "limit", minimum=1) or DEFAULT_PAGE_SIZE
    if limit not in PAGE_SIZES:
        raise FilterError(f"limit={limit}: use one of {', '.join(map(str, PAGE_SIZES))}")
    return limit


def _to_query(f: JobFilter) -> JobQuery:
    contain, like = _search_terms(f.search)
    return JobQuery(states=f.states or None, queues=f.queues or None, tasks=f.tasks or None,
                    created_from=f.created_from, created_to=f.created_to, args_contain=contain, args_like=like)


def _search_terms(search: str) -> tuple[str | None, str | None]:
    """A JSON object searches by containment (`{"user_id": 42}` matches args holding that key and
    value); any other text is a case-insensitive substring of the arguments' JSON."""
    text = search.strip()
    if not text:
        return None, None
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            if _holds_nul(value):
                raise FilterError(f"q={search!r}: a \\u0000 cannot be in any job's arguments (jsonb refuses it)")
            return json.dumps(value), None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return None, f"%{escaped}%"


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = [v for v in params.get(name, ()) if v != ""]
    if len(values) > 1:
        raise FilterError(f"{name}: given {len(values)} times ({', '.join(map(repr, values))}); give it once")
    return values[0] if values else None


def _time(params: Mapping[str, Sequence[str]], name: str) -> datetime | None:
    text = _one(params, name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{name}={text!r} is not a time: use ISO 8601, e.g. 2026-12-02T09:30 "
                          "(UTC unless it carries an offset)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _int(params: Mapping[str, Sequence[str]], name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    text = _one(params, name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise FilterError(f"{name}={text!r} is not a whole number") from None
    if value < minimum:
        raise FilterError(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise FilterError(f"{name}={value} must be at most {maximum}")
    return value


def parse(params: Mapping[str, Sequence[str]]) -> JobFilter:
    """A JobFilter from a query string's values (each name to all its values)."""
    states = tuple(dict.fromkeys(v for v in params.get("state", ()) if v))
    for state in states:
        if state not in STATES:
            raise FilterError(f"state={state!r} is not a job state: use one of {', '.join(STATES)}")
    queues = tuple(dict.fromkeys(v for v in params.get("queue", ()) if v))
    tasks = tuple(dict.fromkeys(v for v in params.get("task", ()) if v))
    for name, values in (("queue", queues), ("task", tasks), ("q", tuple(params.get("q", ())))):
        for value in values:
            if "\x00" in value:
                raise FilterError(f"{name}={value!r}: PostgreSQL text cannot hold a NUL character")
    created_from, created_to = _time(params, "from"), _time(params, "to")
    if created_from and created_to and created_from >= created_to:
        raise FilterError(f"from={created_from.isoformat()} is not before to={created_to.isoformat()}")
    limit = _page_size(params)
    return JobFilter(states=states, queues=queues, tasks=tasks, created_from=created_from, created_to=created_to,
                     search=_one(params, "q") or "", before=_int(params, "before", minimum=1, maximum=MAX_ID),
                     limit=limit)


def parse_ids(values: Sequence[str]) -> list[int]:
    """The job ids of a selection (form values), each a positive whole number."""
    ids = []
    for text in values:
        try:
            value = int(text)
        except ValueError:
            raise FilterError(f"id={text!r} is not a job id (a whole number)") from None
        if value < 1:
            raise FilterError(f"id={value} is not a job id (ids start at 1)")
        if value > MAX_ID:
            raise FilterError(f"id={value} is not a job id (ids are at most {MAX_ID})")
        ids.append(value)
    return sorted(set(ids))


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    """The workflows page's URL: states (running, completed, failed, cancelled), cursor, page size."""

    states: tuple[str, ...] = ()
    before: int | None = None
    limit: int = DEFAULT_PAGE_SIZE

    def to_params(self, *, cursor: bool = True) -> list[tuple[str, str]]:
        return [("state", s) for s in self.states] + _paging(self.limit, self.before if cursor else None)

    def url_query(self, *, cursor: bool = True) -> str:
        return urlencode(self.to_params(cursor=cursor))

    def with_cursor(self, before: int | None) -> WorkflowFilter:
        return replace(self, before=before)


def parse_workflows(params: Mapping[str, Sequence[str]]) -> WorkflowFilter:
    """A WorkflowFilter from a query string's values; the states are a workflow's, not a job's."""
    states = tuple(dict.fromkeys(v for v in params.get("state", ()) if v))
    for state in states:
        if state not in WORKFLOW_STATES:
            raise FilterError(f"state={state!r} is not a workflow state: use one of {', '.join(WORKFLOW_STATES)}")
    return WorkflowFilter(states=states, before=_int(params, "before", minimum=1, maximum=MAX_ID),
                          limit=_page_size(params))
