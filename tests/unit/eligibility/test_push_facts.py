"""P3 as a plain function: an old customer bought on 2 different local days within the last half year."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.rules import Rules
from services.eligibility import rules as r

NOW = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)  # 20:00 China Standard Time


def test_p3_half_year_window_is_six_calendar_months(rules: Rules) -> None:
    market = rules.calendar.market
    assert r.old_customer_window_start(NOW, rules.push, market) == datetime(
        2026, 2, 28, 12, 0, tzinfo=UTC
    )  # Aug 31 → Feb 28
    # Counted on the marketplace's calendar (D1): 23:00 UTC on Aug 30 is Aug 31 07:00 in China.
    assert r.old_customer_window_start(datetime(2026, 8, 30, 23, 0, tzinfo=UTC), rules.push, market) == datetime(
        2026, 2, 27, 23, 0, tzinfo=UTC
    )
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
        ([datetime(2026, 2, 28, 12, 0, tzinfo=UTC), NOW - timedelta(days=1)], True),  # the window's first instant
        ([datetime(2026, 2, 28, 11, 59, tzinfo=UTC), NOW - timedelta(days=1)], False),  # just before it
        ([NOW - timedelta(days=1), NOW + timedelta(hours=1)], False),  # not after now
        ([NOW - timedelta(days=1)], False),
    ],
)
def test_p3_two_distinct_local_days_in_the_window(rules: Rules, paid: list[datetime], old: bool) -> None:
    assert r.is_old_customer(paid, NOW, rules.push, rules.calendar.market) is old
