"""`pgtasks.crontab(...)`: Celery's crontab schedule, with Celery's keyword arguments and meaning.

Each field is expanded here into the set of values it selects (Celery's grammar: numbers, `*`,
ranges that may wrap, steps, day and month names, lists), and the schedule is then evaluated by
croniter from an expression of those explicit values with `day_or=False`. Expanding first, rather
than handing Celery's strings to croniter, keeps Celery's meaning where the two grammars differ
(names like "thurs", wrapping ranges like "fri-mon", 7 for Sunday).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from pgtasks.core.errors import ConfigurationError

CronField = int | str | Iterable[int | str]
"""What one crontab() field takes: an int, a string in cron syntax, or an iterable of either."""

_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # full names, the first one standing for `low`
    hint: str = ""  # an example of a valid value, for the errors

    @property
    def everything(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1))


_MINUTE = _Field("minute", 0, 59, hint="minute=0, minute='*/15' or minute=[0, 30]")
_HOUR = _Field("hour", 0, 23, hint="hour=7, hour='8-17' or hour='*/3'")
_DAY_OF_WEEK = _Field("day_of_week", 0, 6, _DAYS, "day_of_week='mon-fri', day_of_week=1 (Sunday is 0 or 7) or 'sun'")
_DAY_OF_MONTH = _Field("day_of_month", 1, 31, hint="day_of_month=1, day_of_month='1-7' or day_of_month='2-30/2'")
_MONTH_OF_YEAR = _Field("month_of_year", 1, 12, _MONTHS, "month_of_year='*/3', month_of_year=5 or 'jan'")
_FIELDS = (_MINUTE, _HOUR, _DAY_OF_WEEK, _DAY_OF_MONTH, _MONTH_OF_YEAR)  # Celery's argument order


def _error(spec: _Field, value: object, problem: str) -> ConfigurationError:
    return ConfigurationError(f"crontab({spec.name}={value!r}): {problem}; e.g. {spec.hint}")


def _number(spec: _Field, token: str, value: object) -> int:
    """One value of a field: a number, or (day_of_week, month_of_year) a name."""
    token = token.strip()
    if token.isdigit():
        number = int(token)
    elif spec.names and len(token) >= 3 and token.isalpha():
        # Celery reads a name by its first three letters; "thurs" and "sept" work, "th" does not.
        matches = [i for i, name in enumerate(spec.names) if name.startswith(token.lower())]
        if len(matches) != 1:
            raise _error(spec, value, f"{token!r} is not a name of {spec.name} "
                                      f"(use {', '.join(n[:3] for n in spec.names)}, or full names)")
        number = spec.low + matches[0]
    else:
        kind = "a number or a name" if spec.names else "a number"
        raise _error(spec, value, f"{token!r} is not {kind}")
    # Sunday is 0 in Celery and 0 or 7 in cron: accept both.
    high = 7 if spec is _DAY_OF_WEEK else spec.high
    if not spec.low <= number <= high:
        _out_of_range(spec, number, value)
    return number


def _out_of_range(spec: _Field, number: int, value: object) -> NoReturn:
    raise _error(spec, value, f"{number} is out of range: {spec.name} takes {spec.low}-{spec.high}")


def _part(spec: _Field, part: str, value: object) -> list[int]:
    """One comma-separated part: `*`, `*/step`, `a`, `a-b` (wrapping when b < a) or `a-b/step`."""
    part = part.strip()
    if not part:
        raise _error(spec, value, "an empty part between commas")
    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.strip().isdigit() or int(step_text) < 1:
            raise _error(spec, value, f"the step of {part!r} must be a whole number >= 1")
        step = int(step_text)
    base = base.strip()
    if base == "*":
        values = list(spec.everything)
    elif "-" in base:
        start_text, _, end_text = base.partition("-")
        start, end = _number(spec, start_text, value), _number(spec, end_text, value)
        if spec is _DAY_OF_WEEK and start == 7:
            start = 0
        if end >= start:
            values = list(range(start, end + 1))
        else:  # a range that wraps past the field's end, as Celery reads "fri-mon" or "22-2"
            values = list(range(start, spec.high + 1)) + list(range(spec.low, end + 1))
    elif slash:
        raise _error(spec, value, f"{part!r}: a step needs a range or '*' before it, "
                                  f"e.g. '{base}-{spec.high}/{step}' or '*/{step}'")
    else:
        values = [_number(spec, base, value)]
    if spec is _DAY_OF_WEEK:
        values = [0 if v == 7 else v for v in values]
    return values[::step]


def _expand(spec: _Field, value: CronField) -> tuple[int, ...]:
    """The sorted values `value` selects in `spec`'s field."""
    if isinstance(value, bool):
        raise _error(spec, value, "expected an int, a string or a list, not a bool")
    if isinstance(value, int):
        items: list[int | str] = [value]
    elif isinstance(value, str):
        items = [value]
    elif isinstance(value, Iterable):
        items = list(value)
        if not items:
            raise _error(spec, value, "an empty list selects nothing")
    else:
        raise _error(spec, value, f"expected an int, a string or a list of them, not {type(value).__name__}")
    selected: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise _error(spec, value, f"{item!r} is not an int or a string")
        if isinstance(item, int):
            selected.update(_part(spec, str(item), value) if item >= 0 else _out_of_range(spec, item, value))
        else:
            for part in item.split(","):
                selected.update(_part(spec, part, value))
    return tuple(sorted(selected))


def _compact(spec: _Field, values: tuple[int, ...]) -> str:
    """`values` in cron syntax: `*` for the whole field, runs of three or more as `a-b`."""
    if values == spec.everything:
        return "*"
    parts: list[str] = []
    run_start = previous = values[0]
    for number in (*values[1:], None):
        if number is not None and number == previous + 1:
            previous = number
            continue
        if previous - run_start >= 2:
            parts.append(f"{run_start}-{previous}")
        else:
            parts.extend(str(n) for n in range(run_start, previous + 1))
        if number is not None:
            run_start = previous = number
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class Crontab:
    """A schedule built by pgtasks.crontab(): the values each field selects, sorted.

    A minute matches when its minute, hour and month are selected and its day is selected by
    both day_of_month and day_of_week (Celery's meaning). Give it as
    `@app.periodic(cron=pgtasks.crontab(...))`.
    """

    minute: tuple[int, ...]
    hour: tuple[int, ...]
    day_of_week: tuple[int, ...]  # 0 is Sunday
    day_of_month: tuple[int, ...]
    month_of_year: tuple[int, ...]
    # How each field was written (a string or an int as given), for str(); not part of equality.
    written: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False, hash=False)
    _fields: Mapping[str, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        compact = {spec.name: _compact(spec, getattr(self, spec.name)) for spec in _FIELDS}
        object.__setattr__(self, "_fields", compact)

    @property
    def expression(self) -> str:
        """The five cron fields (minute hour day month weekday), to evaluate with day-of-month AND day-of-week."""
        f = self._fields
        return f"{f['minute']} {f['hour']} {f['day_of_month']} {f['month_of_year']} {f['day_of_week']}"

    def __str__(self) -> str:
        """`crontab(minute='*/15', day_of_week='mon-fri')`: the restricted fields, as written."""
        restricted = ", ".join(f"{name}={self.written.get(name, text)!r}"
                               for name, text in self._fields.items() if text != "*")
        return f"crontab({restricted})"

    __repr__ = __str__


def crontab(minute: CronField = "*", hour: CronField = "*", day_of_week: CronField = "*",
            day_of_month: CronField = "*", month_of_year: CronField = "*") -> Crontab:
    """A Celery-style crontab schedule: `@app.periodic(cron=pgtasks.crontab(minute=30, hour=7, day_of_week=1))`.

    The arguments, their order and their meaning are Celery's. Each takes an int, a string in
    cron syntax (`"*"`, `"*/15"`, `"1-5"`, `"8-17/2"`, `"1,13,30-45"`, ranges that wrap such as
    `"fri-mon"`), or a list or set of those. day_of_week counts from Sunday = 0 (7 is Sunday too)
    and takes names (`"mon-fri"`, `"sun"`, `"thursday"`); month_of_year takes 1-12 or names
    (`"jan"`). Unlike a `cron="..."` string, which follows standard cron, a day must be selected
    by **both** day_of_month and day_of_week: `crontab(0, 0, day_of_week=1, day_of_month="1-7")`
    is the first Monday of each month only (docs/periodic.md). Raises ConfigurationError naming
    the field and the bad value.
    """
    given = dict(zip((spec.name for spec in _FIELDS), (minute, hour, day_of_week, day_of_month, month_of_year),
                     strict=True))
    values = {spec.name: _expand(spec, given[spec.name]) for spec in _FIELDS}
    written = {name: str(value) for name, value in given.items() if isinstance(value, int | str)}
    return Crontab(**values, written=written)
