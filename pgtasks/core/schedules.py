"""Periodic schedules: `@app.periodic(...)` validation and the tick arithmetic of cron and intervals."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from pgtasks.core.crontab import Crontab
from pgtasks.core.definition import TaskDefinition
from pgtasks.core.errors import ConfigurationError, PgtasksError
from pgtasks.core.models import EnqueueRow
from pgtasks.core.options import EnqueueOptions

CatchUp = Literal["latest", "skip", "all"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("latest", "skip", "all")
DEFAULT_CATCH_UP_LIMIT = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PeriodicSchedule:
    """One schedule: which task, with which arguments, at which ticks, and what to do after downtime.

    Ticks are instants (UTC). A cron expression is evaluated in `timezone` by croniter, so
    daylight-saving changes follow croniter's rules in that zone; a `crontab` (pgtasks.crontab())
    is evaluated from its expression with day-of-month AND day-of-week, Celery's meaning, where a
    cron string ORs them. An interval (`every`) ticks at whole multiples of it since the Unix
    epoch, so every process computes the same ticks. `row` carries the schedule's own queue,
    priority and expiry, resolved against the task's defaults.
    """

    name: str
    task: TaskDefinition[Any, Any]
    row: EnqueueRow
    cron: str | None
    every: timedelta | None
    timezone: tzinfo
    catch_up: CatchUp
    catch_up_limit: int
    overlap: bool = True  # False: skip a tick while the previous tick's job has not finished
    crontab: Crontab | None = None  # set when given as cron=pgtasks.crontab(...); `cron` is its expression

    @property
    def spec(self) -> str:
        """The schedule as a person reads it: `cron '*/5 * * * *' Europe/Paris`,
        `crontab(minute='0', hour='7') UTC` or `every 0:00:30`."""
        if self.crontab is not None:
            return f"{self.crontab} {self.timezone}"
        if self.cron is not None:
            return f"cron {self.cron!r} {self.timezone}"
        return f"every {self.every}"

    def _cron(self, start: datetime) -> croniter:
        assert self.cron is not None
        return croniter(self.cron, start.astimezone(self.timezone), day_or=self.crontab is None,
                        second_at_beginning=len(self.cron.split()) == 6)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment`."""
        if self.every is not None:
            step = _us(self.every)
            return _EPOCH + timedelta(microseconds=(_us(moment - _EPOCH) // step + 1) * step)
        tick: datetime = self._cron(moment).get_next(datetime)
        return tick.astimezone(UTC)

    def at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before `moment`."""
        if self.every is not None:
            step = _us(self.every)
            return _EPOCH + timedelta(microseconds=(_us(moment - _EPOCH) // step) * step)
        # croniter's get_prev is strictly before its start, so start a microsecond later.
        tick: datetime = self._cron(moment + _ONE_US).get_prev(datetime)
        return tick.astimezone(UTC)

    def ticks_back(self, newest: datetime, after: datetime) -> Iterator[datetime]:
        """Ticks at or before `newest` and strictly after `after`, newest first."""
        if newest <= after:
            return
        if self.every is not None:
            tick = self.at_or_before(newest)
            while tick > after:
                yield tick
                tick -= self.every
            return
        it = self._cron(newest + _ONE_US)
        while True:
            tick = it.get_prev(datetime).astimezone(UTC)
            if tick <= after:
                return
            yield tick

    def count_between(self, after: datetime, upto: datetime, cap: int) -> int:
        """How many ticks lie in (after, upto], counting at most `cap` (cron has no closed form)."""
        if upto <= after:
            return 0
        if self.every is not None:
            step = _us(self.every)
            return min(cap, _us(upto - _EPOCH) // step - _us(after - _EPOCH) // step)
        count = 0
        it = self._cron(after)
        while count < cap and it.get_next(datetime).astimezone(UTC) <= upto:
            count += 1
        return count


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def resolve_timezone(value: str | tzinfo | None) -> tzinfo:
    """A tzinfo from an IANA name ("Europe/Paris"), a tzinfo, or None (UTC)."""
    if value is None:
        return UTC
    if isinstance(value, tzinfo):
        return value
    if isinstance(value, str):
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"timezone={value!r} is not a known IANA time zone; use a name such as 'UTC' or "
                "'Europe/Paris' (see zoneinfo.available_timezones())"
            ) from None
    raise ConfigurationError(f"timezone={value!r}: expected an IANA zone name, a tzinfo, or None for UTC")


def validate_crontab(schedule: Crontab, zone: tzinfo) -> str:
    """The expression of `schedule`, or ConfigurationError if no date matches all its day fields."""
    try:
        croniter(schedule.expression, datetime.now(zone), day_or=False).get_next(datetime)
    except CroniterBadDateError:
        raise ConfigurationError(
            f"cron={schedule} never fires: no date is selected by day_of_month, month_of_year and "
            "day_of_week together (crontab() requires all three to match); check those fields"
        ) from None
    return schedule.expression


def validate_cron(expression: str, zone: tzinfo) -> str:
    """Return `expression` normalised, or raise ConfigurationError naming it and the fix."""
    if not isinstance(expression, str):
        raise ConfigurationError(f"cron={expression!r}: expected a cron expression string such as '*/5 * * * *' "
                                 "or a pgtasks.crontab(...)")
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ConfigurationError(
            f"cron={expression!r} has {len(fields)} fields; use 5 (minute hour day month weekday) or 6 "
            "(second minute hour day month weekday), e.g. '*/5 * * * *' or '*/10 * * * * *'"
        )
    normalised = " ".join(fields)
    try:
        it = croniter(normalised, datetime.now(zone), second_at_beginning=len(fields) == 6)
        it.get_next(datetime)
    except CroniterBadDateError:
        raise ConfigurationError(f"cron={expression!r} never fires (no matching date); check day and month") from None
    except (CroniterError, ValueError, KeyError) as exc:
        raise ConfigurationError(f"cron={expression!r} is not a valid cron expression: {exc}") from None
    return normalised


def validate_every(every: timedelta | float | int) -> timedelta:
    if isinstance(every, bool) or not isinstance(every, timedelta | int | float):
        raise ConfigurationError(f"every={every!r}: expected a datetime.timedelta (or seconds as a number)")
    if not isinstance(every, timedelta) and not math.isfinite(every):
        raise ConfigurationError(f"every={every!r}: the interval must be a finite number of seconds")
    delta = every if isinstance(every, timedelta) else timedelta(seconds=every)
    if delta < timedelta(seconds=1):
        raise ConfigurationError(f"every={every!r}: the interval must be at least one second")
    return delta


def schedule_options(queue: str | None, priority: int | None,
                     expires: float | timedelta | None) -> EnqueueOptions:
    """A schedule's enqueue options; each is checked as .apply_async() checks it, when the row is built."""
    if isinstance(expires, datetime):
        raise ConfigurationError(
            f"expires={expires!r}: a schedule's jobs expire a duration after each is enqueued; pass seconds "
            "or a timedelta (a fixed datetime would expire every later tick's job at once)"
        )
    return EnqueueOptions(queue=queue, priority=priority, expires=expires)


def make_schedule(
    task: TaskDefinition[Any, Any], *, cron: str | Crontab | None, every: timedelta | float | None,
    args: Sequence[Any], kwargs: Mapping[str, Any] | None, timezone: str | tzinfo | None,
    catch_up: str, catch_up_limit: int, name: str | None, overlap: bool = True,
    queue: str | None = None, priority: int | None = None, expires: float | timedelta | None = None,
    default_timezone: tzinfo = UTC,
) -> PeriodicSchedule:
    """Validate everything `@app.periodic` was given; every mistake fails here, at decoration time.

    `timezone` wins over `default_timezone` (the App's); `every=` schedules use neither.
    """
    if not isinstance(task, TaskDefinition):
        raise ConfigurationError(
            f"@app.periodic must decorate a task, got {task!r}: put @app.periodic above @app.task"
        )
    if (cron is None) == (every is None):
        raise ConfigurationError(
            f"@app.periodic on {task.name}: give exactly one of cron='...' (or cron=pgtasks.crontab(...)) "
            "or every=timedelta(...) "
            f"(got cron={cron!r}, every={every!r})"
        )
    if catch_up not in CATCH_UP_POLICIES:
        raise ConfigurationError(f"catch_up={catch_up!r}: expected one of {', '.join(CATCH_UP_POLICIES)}")
    if isinstance(catch_up_limit, bool) or not isinstance(catch_up_limit, int) or catch_up_limit < 1:
        raise ConfigurationError(f"catch_up_limit={catch_up_limit!r}: expected an integer >= 1")
    if not isinstance(overlap, bool):
        raise ConfigurationError(f"overlap={overlap!r}: expected True (the default) or False")
    zone = resolve_timezone(timezone) if timezone is not None else default_timezone
    if every is not None:
        if timezone is not None:
            raise ConfigurationError(
                f"timezone={timezone!r} only applies to cron schedules; every= ticks on fixed instants"
            )
        zone = UTC  # intervals tick on instants: the App's time zone does not apply to them
    schedule_name = name if name is not None else task.name
    if not isinstance(schedule_name, str) or not schedule_name.strip():
        raise ConfigurationError(f"name={name!r}: expected a non-empty schedule name")
    options = schedule_options(queue, priority, expires)
    try:
        # Encoded once, now: a bad argument or option fails at decoration, not at every tick in the leader.
        row = task.build_row(tuple(args), dict(kwargs or {}), options)
    except ConfigurationError as exc:  # an option .apply_async() would refuse too
        raise ConfigurationError(f"@app.periodic on {task.name}: {exc}") from exc
    except PgtasksError as exc:
        raise ConfigurationError(f"@app.periodic on {task.name}: args/kwargs do not fit the task: {exc}") from exc
    if isinstance(cron, Crontab):
        expression: str | None = validate_crontab(cron, zone)
    else:
        expression = validate_cron(cron, zone) if cron is not None else None
    return PeriodicSchedule(
        name=schedule_name,
        task=task,
        row=row,
        cron=expression,
        every=validate_every(every) if every is not None else None,
        timezone=zone,
        catch_up=catch_up,  # checked against CATCH_UP_POLICIES above
        catch_up_limit=catch_up_limit,
        overlap=overlap,
        crontab=cron if isinstance(cron, Crontab) else None,
    )
