"""Rates in basis points shown as percentages that read true (SPEC T3's "84.99% < 85.00%")."""

from __future__ import annotations

import pytest

from services.common.percent import percent_of_bp


@pytest.mark.parametrize(
    ("bp", "shown"),
    [(8499, "84.99%"), (8500, "85.00%"), (0, "0.00%"), (5, "0.05%"), (10_000, "100.00%"), (-5, "-0.05%")],
)
def test_T3_basis_points_show_with_two_exact_decimals(bp: int, shown: str) -> None:
    assert percent_of_bp(bp) == shown
