"""D2: totals over unbounded rows are exact, reported saturated; the split sum joins back exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.common.bounds import LOW_BITS, LOW_MASK, joined_sum, saturated
from services.common.validation import MAX_INT32, MAX_INT64


def test_D2_a_total_that_fits_is_itself_and_one_past_the_largest_is_the_largest() -> None:
    assert saturated(0) == 0 and saturated(MAX_INT64) == MAX_INT64
    assert saturated(MAX_INT64 + 1) == MAX_INT64 and saturated(10**30) == MAX_INT64
    assert saturated(MAX_INT32 + 1, MAX_INT32) == MAX_INT32


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
def test_D2_the_two_halves_the_database_sums_join_into_the_exact_total(values: list[int]) -> None:
    """What ``split_sum`` asks the database for (``v >> 32`` and ``v & 0xFFFFFFFF``, two's complement), added
    up as the database would, joins back into the exact sum of any int64 values, however large."""
    high = sum(v >> LOW_BITS for v in values)
    low = sum(v & LOW_MASK for v in values)
    assert joined_sum(high, low) == sum(values)
    assert joined_sum(None, None) == 0
