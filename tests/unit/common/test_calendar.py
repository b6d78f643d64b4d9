"""D1: one marketplace calendar (China Standard Time) for every day, month and year of SPEC."""

from __future__ import annotations

import calendar as stdlib_calendar
from datetime import UTC, date, datetime, timedelta

import pytest

from services.common.calendar import MarketCalendar

CST = MarketCalendar(8)


def test_D1_days_turn_at_midnight_in_china() -> None:
    assert CST.day_key(datetime(2026, 3, 10, 15, 59, 59, tzinfo=UTC)) == "2026-03-10"
    assert CST.day_key(datetime(2026, 3, 10, 16, 0, tzinfo=UTC)) == "2026-03-11"
    assert CST.day_start(date(2026, 3, 11)) == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
    assert CST.next_day_start(datetime(2026, 3, 10, 15, 30, tzinfo=UTC)) == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
    assert CST.show(datetime(2026, 3, 10, 16, 0, tzinfo=UTC)) == "2026-03-11 00:00 UTC+8"


def test_D1_months_and_years_turn_in_china() -> None:
    assert CST.month_key(datetime(2026, 3, 31, 15, 59, tzinfo=UTC)) == "2026-03"
    assert CST.month_key(datetime(2026, 3, 31, 16, 0, tzinfo=UTC)) == "2026-04"
    assert CST.month_start("2026-04") == datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
    assert CST.year(datetime(2026, 12, 31, 16, 0, tzinfo=UTC)) == 2027
    assert CST.year_start(2027) == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    assert MarketCalendar(0).year(datetime(2026, 12, 31, 16, 0, tzinfo=UTC)) == 2026


@pytest.mark.parametrize("year", [1900, 2000, 2024, 2026, 2100])
@pytest.mark.parametrize("month", range(1, 13))
def test_D1_months_before_clips_to_the_shorter_month_on_every_31st_and_leap_day(year: int, month: int) -> None:
    """P3's "last half year" from the last day of every month, across the century leap-year rules."""
    last = stdlib_calendar.monthrange(year, month)[1]
    local_end = datetime(year, month, last, 20, 0, tzinfo=CST.zone)
    start = CST.local(CST.months_before(local_end.astimezone(UTC), 6))
    back = (year * 12 + month - 1) - 6
    want_year, want_month = divmod(back, 12)
    want_day = min(last, stdlib_calendar.monthrange(want_year, want_month + 1)[1])
    assert (start.year, start.month, start.day, start.hour) == (want_year, want_month + 1, want_day, 20)


def test_D1_days_after_counts_marketplace_days() -> None:
    late_on_aug_22 = datetime(2026, 8, 22, 15, 30, tzinfo=UTC)  # 23:30 there
    assert CST.days_after(late_on_aug_22, 2) == date(2026, 8, 24)
    assert CST.days_after(late_on_aug_22 + timedelta(hours=1), 2) == date(2026, 8, 25)


def test_D1_P3_months_before_counts_the_marketplace_month_not_the_utc_one() -> None:
    """At 07:00 on Aug 31 in China it is still Aug 30 in UTC: six months back is Feb 28 there, not Feb 28 in UTC."""
    aug_31_0700_china = datetime(2026, 8, 30, 23, 0, tzinfo=UTC)
    assert CST.months_before(aug_31_0700_china, 6) == datetime(2026, 2, 27, 23, 0, tzinfo=UTC)
    assert CST.local(CST.months_before(aug_31_0700_china, 6)).day == 28
