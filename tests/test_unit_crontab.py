"""pgtasks.crontab(): Celery's arguments, value forms and meaning (day-of-month AND day-of-week), and the
tick arithmetic of a schedule built from one. Pure arithmetic, no database."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

import pgtasks
from pgtasks import ConfigurationError, Crontab, crontab
from pgtasks.core.definition import TaskConfig, TaskDefinition
from pgtasks.core.schedules import PeriodicSchedule, make_schedule

ALL_HOURS = tuple(range(24))


def schedule(cron: str | Crontab, timezone: str | None = None) -> PeriodicSchedule:
    def job() -> None: ...

    return make_schedule(TaskDefinition(job, TaskConfig.create("job")), cron=cron, every=None, args=(), kwargs=None,
                         timezone=timezone, catch_up="latest", catch_up_limit=100, name=None)


def fire_dates(cron: str | Crontab, year: int) -> list[date]:
    """Every day of `year` the schedule fires on (a daily schedule fires once on each)."""
    sched = schedule(cron)
    start, end = datetime(year, 1, 1, tzinfo=UTC) - timedelta(microseconds=1), datetime(year + 1, 1, 1, tzinfo=UTC)
    days: list[date] = []
    tick = sched.next_after(start)
    while tick < end:
        days.append(tick.date())
        tick = sched.next_after(tick)
    return days


def days_of(year: int, keep: Any) -> list[date]:
    """The days of `year` for which keep(day) is true, computed without any cron library."""
    first = date(year, 1, 1)
    every_day = (first + timedelta(days=n) for n in range(366 if calendar.isleap(year) else 365))
    return [d for d in every_day if keep(d)]


def celery_weekday(day: date) -> int:
    return day.isoweekday() % 7  # Celery's numbering: Sunday is 0


# -- Celery's meaning: a day must match day_of_month AND day_of_week ------------------------------


def test_first_and_third_monday_as_celerys_docs_describe() -> None:
    """Celery's crontab docstring: day_of_week=1 with day_of_month='1-7,15-21' "means every first and
    third Monday of every month"."""
    expected = days_of(2024, lambda d: d.weekday() == 0 and (d.day <= 7 or 15 <= d.day <= 21))
    assert fire_dates(crontab(0, 0, day_of_week=1, day_of_month="1-7,15-21"), 2024) == expected
    assert len(expected) == 24 and expected[:3] == [date(2024, 1, 1), date(2024, 1, 15), date(2024, 2, 5)]


def test_sunday_with_every_seventh_day_fires_only_in_months_that_begin_on_a_sunday() -> None:
    """Celery's docstring: day_of_week=0 with day_of_month every seventh day fires "only [in] months that
    begin on Sunday". In 2024 those are September and December."""
    dates = fire_dates(crontab(0, 0, day_of_week=0, day_of_month="*/7"), 2024)
    assert dates == [date(2024, m, d) for m in (9, 12) for d in (1, 8, 15, 22, 29)]
    assert {date(2024, m, 1).weekday() for m in (9, 12)} == {6}  # both begin on a Sunday


def test_the_issues_example_first_monday_only_where_a_cron_string_means_either() -> None:
    """`0 0 1-7 * 1`: standard cron (a cron string) fires on every Monday and on the 1st to 7th;
    crontab() with the same fields fires on the first Monday of the month only."""
    and_days = fire_dates(crontab(minute=0, hour=0, day_of_month="1-7", day_of_week=1), 2024)
    or_days = fire_dates("0 0 1-7 * 1", 2024)
    assert and_days == days_of(2024, lambda d: d.weekday() == 0 and d.day <= 7)
    assert or_days == days_of(2024, lambda d: d.weekday() == 0 or d.day <= 7)
    assert and_days[:4] == [date(2024, 1, 1), date(2024, 2, 5), date(2024, 3, 4), date(2024, 4, 1)]
    assert len(and_days) == 12 and len(or_days) > 100


def test_month_and_day_of_month_are_anded_too() -> None:
    # Celery's table: crontab(0, 0, day_of_month='11', month_of_year='5'): "the eleventh of May every year".
    assert fire_dates(crontab(0, 0, day_of_month="11", month_of_year="5"), 2025) == [date(2025, 5, 11)]
    # Friday the 13th: both day fields restricted, so only days that are both.
    assert fire_dates(crontab(0, 0, day_of_month=13, day_of_week="fri"), 2026) == [
        date(2026, 2, 13), date(2026, 3, 13), date(2026, 11, 13)]


def test_one_restricted_day_field_means_the_same_in_both_forms() -> None:
    # With the other day field '*', AND and OR agree: crontab() and the cron string tick alike.
    for fields, expression in [({"day_of_week": "mon-fri"}, "0 9 * * 1-5"), ({"day_of_month": "1,15"}, "0 9 1,15 * *")]:
        assert fire_dates(crontab(minute=0, hour=9, **fields), 2024) == fire_dates(expression, 2024)


def test_ticks_back_and_counts_follow_the_and_meaning() -> None:
    first_monday = schedule(crontab(minute=30, hour=7, day_of_week="mon", day_of_month="1-7"))
    at = datetime(2024, 4, 20, tzinfo=UTC)
    assert first_monday.next_after(at) == datetime(2024, 5, 6, 7, 30, tzinfo=UTC)
    assert first_monday.at_or_before(at) == datetime(2024, 4, 1, 7, 30, tzinfo=UTC)
    assert first_monday.at_or_before(datetime(2024, 4, 1, 7, 30, tzinfo=UTC)) == datetime(2024, 4, 1, 7, 30,
                                                                                          tzinfo=UTC)
    assert list(first_monday.ticks_back(at, after=datetime(2024, 1, 31, tzinfo=UTC))) == [
        datetime(2024, 4, 1, 7, 30, tzinfo=UTC), datetime(2024, 3, 4, 7, 30, tzinfo=UTC),
        datetime(2024, 2, 5, 7, 30, tzinfo=UTC)]
    assert first_monday.count_between(datetime(2024, 1, 1, 8, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC),
                                      cap=100) == 11


def test_a_crontab_follows_its_time_zone() -> None:
    nine = schedule(crontab(minute=0, hour=9, day_of_week="mon-fri"), timezone="Europe/Berlin")
    assert nine.next_after(datetime(2024, 1, 12, 12, tzinfo=UTC)) == datetime(2024, 1, 15, 8, tzinfo=UTC)  # CET, Mon
    assert nine.next_after(datetime(2024, 7, 10, tzinfo=UTC)) == datetime(2024, 7, 10, 7, tzinfo=UTC)  # CEST
    assert nine.spec == "crontab(minute='0', hour='9', day_of_week='mon-fri') Europe/Berlin"


# -- Celery's value forms ----------------------------------------------------------------------------


def test_celerys_documented_examples_expand_to_the_values_it_describes() -> None:
    """The examples of Celery's periodic tasks guide, each with the values its table says it selects."""
    assert crontab() == Crontab(tuple(range(60)), ALL_HOURS, tuple(range(7)), tuple(range(1, 32)),
                                tuple(range(1, 13)))
    assert crontab(minute=0, hour=0).expression == "0 0 * * *"
    assert crontab(minute=0, hour="*/3").hour == (0, 3, 6, 9, 12, 15, 18, 21)
    assert crontab(minute=0, hour="0,3,6,9,12,15,18,21") == crontab(minute=0, hour="*/3")
    assert crontab(minute="*/15").minute == (0, 15, 30, 45)
    assert crontab(day_of_week="sunday") == crontab(minute="*", hour="*", day_of_week="sun")
    assert crontab(day_of_week="sunday").day_of_week == (0,)
    thu_fri = crontab(minute="*/10", hour="3,17,22", day_of_week="thu,fri")
    assert (thu_fri.minute, thu_fri.hour, thu_fri.day_of_week) == ((0, 10, 20, 30, 40, 50), (3, 17, 22), (4, 5))
    # "every even hour, and every hour divisible by three": all but 1, 5, 7, 11, 13, 17, 19, 23.
    assert crontab(minute=0, hour="*/2,*/3").hour == tuple(h for h in ALL_HOURS if h not in (1, 5, 7, 11, 13, 17,
                                                                                               19, 23))
    assert 15 in crontab(minute=0, hour="*/5").hour and 17 not in crontab(minute=0, hour="*/5").hour
    assert crontab(minute=0, hour="*/3,8-17").hour == (0, 3, 6, *range(8, 18), 18, 21)
    assert crontab(0, 0, day_of_month="2").day_of_month == (2,)
    assert crontab(0, 0, day_of_month="2-30/2").day_of_month == tuple(range(2, 31, 2))
    assert crontab(0, 0, day_of_month="1-7,15-21").day_of_month == (*range(1, 8), *range(15, 22))
    assert crontab(0, 0, month_of_year="*/3").month_of_year == (1, 4, 7, 10)
    assert crontab(month_of_year="2-12/2").month_of_year == (2, 4, 6, 8, 10, 12)
    assert crontab(minute="1,13,30-45,50-59/2").minute == (1, 13, *range(30, 46), *range(50, 60, 2))
    assert crontab(hour="0,8-17/2").hour == (0, 8, 10, 12, 14, 16)


def test_ints_lists_sets_names_and_wrapping_ranges() -> None:
    assert crontab(minute=[0, 30], hour={9, 21}).expression == "0,30 9,21 * * *"
    assert crontab(day_of_week=range(1, 6)) == crontab(day_of_week="mon-fri") == crontab(day_of_week="1-5")
    assert crontab(day_of_week=["mon", "wed-fri"]).day_of_week == (1, 3, 4, 5)
    assert crontab(day_of_week="fri-mon").day_of_week == (0, 1, 5, 6)  # wraps past Saturday, as in Celery
    assert crontab(hour="22-2").hour == (0, 1, 2, 22, 23)
    assert crontab(day_of_week=7) == crontab(day_of_week=0) == crontab(day_of_week="Sun")  # 7 is Sunday, as in cron
    assert crontab(day_of_week="5-7").day_of_week == (0, 5, 6)
    # Celery reads a day by its first three letters: "thurs" and "tues" work as "thu" and "tue".
    assert crontab(day_of_week="tues,thurs") == crontab(day_of_week="tue,thu")
    assert crontab(month_of_year="jan,sept-nov").month_of_year == (1, 9, 10, 11)
    assert crontab(day_of_week="*/2").day_of_week == (0, 2, 4, 6)  # days divisible by two, Celery's warning
    assert crontab(minute=5, hour=7) == pgtasks.crontab(5, 7)  # Celery's positional order


def test_str_shows_the_restricted_fields_as_written() -> None:
    assert str(crontab()) == "crontab()"
    assert str(crontab(minute="*/15", day_of_week="mon-fri")) == "crontab(minute='*/15', day_of_week='mon-fri')"
    assert str(crontab(minute=[0, 30], hour=7)) == "crontab(minute='0,30', hour='7')"
    assert repr(crontab(hour=7)) == "crontab(hour='7')"


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"hour": 24}, "crontab(hour=24): 24 is out of range: hour takes 0-23"),
    ({"minute": 60}, "minute takes 0-59"),
    ({"minute": -1}, "crontab(minute=-1): -1 is out of range"),
    ({"day_of_month": 0}, "day_of_month takes 1-31"),
    ({"month_of_year": "13"}, "month_of_year takes 1-12"),
    ({"day_of_week": 8}, "day_of_week takes 0-6"),
    ({"day_of_week": "xyz"}, "'xyz' is not a name of day_of_week"),
    ({"day_of_week": "th"}, "'th' is not a number or a name"),
    ({"hour": "mon"}, "'mon' is not a number"),  # names only where Celery means them
    ({"minute": "5/10"}, "a step needs a range or '*' before it, e.g. '5-59/10'"),
    ({"minute": "*/0"}, "the step of '*/0' must be a whole number >= 1"),
    ({"minute": "1,,2"}, "an empty part between commas"),
    ({"minute": []}, "an empty list selects nothing"),
    ({"minute": True}, "not a bool"),
    ({"minute": 1.5}, "not float"),
    ({"minute": [1, None]}, "None is not an int or a string"),
])
def test_bad_values_name_the_field_the_value_and_an_example(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        crontab(**fields)
    assert fragment in str(info.value)
    assert "; e.g. " in str(info.value)


def test_a_crontab_that_never_fires_fails_at_decoration() -> None:
    never = r"crontab\(minute='0', hour='0', day_of_month='30', month_of_year='2'\) never fires"
    with pytest.raises(ConfigurationError, match=never):
        schedule(crontab(0, 0, day_of_month=30, month_of_year=2))
    # Rare but real: the 29th of February on a Monday (2044, 2072, ...).
    assert schedule(crontab(0, 0, day_of_month=29, month_of_year=2, day_of_week=1)).next_after(
        datetime(2024, 3, 1, tzinfo=UTC)) == datetime(2044, 2, 29, tzinfo=UTC)
