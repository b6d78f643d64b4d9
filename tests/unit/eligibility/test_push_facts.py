"""P3 as plain functions: an old customer bought on 2 different marketplace days of the half year ending today.

``is_old_customer`` is the definition; ``old_customer_spans`` (the runs of days
a buyer is old, which the stored counts are made of) is held to it day by day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.rules import Rules, load_rules
from services.eligibility import rules as r

NOW = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)  # 20:00 China Standard Time


def test_p3_half_year_window_is_six_calendar_months_of_whole_days(rules: Rules) -> None:
    market = rules.calendar.market
    # Aug 31 → Feb 28, from 00:00 China Standard Time (16:00 UTC the day before).
    assert r.old_customer_window_start(NOW, rules.push, market) == datetime(2026, 2, 27, 16, 0, tzinfo=UTC)
    # Counted on the marketplace's calendar (D1): 23:00 UTC on Aug 30 is Aug 31 07:00 in China.
    assert r.old_customer_window_start(datetime(2026, 8, 30, 23, 0, tzinfo=UTC), rules.push, market) == datetime(
        2026, 2, 27, 16, 0, tzinfo=UTC
    )
    # 15:59 UTC on Aug 30 is still Aug 30 in China: Feb 28 too (Aug 30 − 6 months, clipped).
    assert r.old_customer_first_day(date(2026, 8, 30), rules.push) == date(2026, 2, 28)
    assert r.old_customer_first_day(date(2028, 8, 31), rules.push) == date(2028, 2, 29)
    assert r.broadcast_window_start(NOW, rules.push) == NOW - timedelta(days=7)


@pytest.mark.parametrize(
    ("paid", "old"),
    [
        ([NOW - timedelta(days=1), NOW - timedelta(days=2)], True),
        ([NOW - timedelta(hours=1), NOW - timedelta(hours=2)], False),  # the same day twice
        # 15:59 and 16:01 UTC are 23:59 and 00:01 in China: two different days.
        ([datetime(2026, 8, 30, 15, 59, tzinfo=UTC), datetime(2026, 8, 30, 16, 1, tzinfo=UTC)], True),
        # 00:01 and 15:59 UTC are one China day (08:01 and 23:59).
        ([datetime(2026, 8, 30, 0, 1, tzinfo=UTC), datetime(2026, 8, 30, 15, 59, tzinfo=UTC)], False),
        ([datetime(2026, 2, 27, 16, 0, tzinfo=UTC), NOW - timedelta(days=1)], True),  # the window's first instant
        ([datetime(2026, 2, 27, 15, 59, tzinfo=UTC), NOW - timedelta(days=1)], False),  # just before it
        # P3 counts days: an order paid later today counts today, one paid tomorrow (China) from tomorrow.
        ([NOW - timedelta(days=1), datetime(2026, 8, 31, 15, 59, tzinfo=UTC)], True),
        ([NOW - timedelta(days=1), datetime(2026, 8, 31, 16, 0, tzinfo=UTC)], False),
        ([NOW - timedelta(days=1)], False),
    ],
)
def test_p3_two_distinct_local_days_in_the_window(rules: Rules, paid: list[datetime], old: bool) -> None:
    assert r.is_old_customer(paid, NOW, rules.push, rules.calendar.market) is old


def old_on(days: list[date], today: date, rules: Rules) -> bool:
    """The definition, asked for one day: an order at noon on each of the days."""
    market = rules.calendar.market
    noon = [market.day_start(day) + timedelta(hours=12) for day in days]
    return r.is_old_customer(noon, market.day_start(today) + timedelta(hours=12), rules.push, market)


def in_spans(spans: list[tuple[date, date]], day: date) -> bool:
    return any(first <= day < end for first, end in spans)


@pytest.mark.parametrize(
    ("day", "last"),
    [
        (date(2026, 3, 1), date(2026, 9, 1)),  # Sep 2's half year begins Mar 2
        (date(2026, 2, 28), date(2026, 8, 31)),  # Aug 28..31 − 6 months are all Feb 28 (clipped)
        (date(2026, 8, 31), date(2027, 2, 28)),
        (date(2027, 8, 29), date(2028, 2, 29)),  # into a leap February
    ],
)
def test_p3_last_day_a_day_counts(rules: Rules, day: date, last: date) -> None:
    assert r.last_day_counting(day, rules.push) == last
    assert (
        r.old_customer_first_day(last, rules.push)
        <= day
        < r.old_customer_first_day(last + timedelta(days=1), rules.push)
    )


def test_p3_spans_of_a_steady_buyer(rules: Rules) -> None:
    spans = r.old_customer_spans([date(2026, 1, 10), date(2026, 1, 20), date(2026, 3, 5)], rules.push)
    # Old from the second day, until Jan 10 leaves (after Jul 10) — Jan 20 and Mar 5 keep them old until Jul 20.
    assert spans == [(date(2026, 1, 20), date(2026, 7, 21))]
    assert r.old_customer_spans([date(2026, 1, 10)], rules.push) == []
    assert r.old_customer_spans([], rules.push) == []


RULES = load_rules(env={})
DAYS = st.dates(min_value=date(2027, 6, 1), max_value=date(2029, 3, 31))


@given(days=st.lists(DAYS, max_size=8), probes=st.lists(DAYS, min_size=1, max_size=12))
def test_p3_spans_agree_with_the_definition_on_every_day(days: list[date], probes: list[date]) -> None:
    rules = RULES
    spans = r.old_customer_spans(days, rules.push)
    for first, end in spans:
        assert first < end
        assert old_on(days, first, rules) and not old_on(days, end, rules)
        assert not old_on(days, first - timedelta(days=1), rules)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))  # apart: runs are maximal
    for day in probes + [d + timedelta(days=k) for d in days for k in (0, 181, 182, 183, 184)]:
        assert in_spans(spans, day) is old_on(days, day, rules), day
