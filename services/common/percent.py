"""Rates kept in basis points, shown as percentages that read true.

A rule compares basis points (integers); its refusal shows them as
percentages. Rounding to whole percent made "84.99% < 85%" read "85% < 85%"
(T3), so a rate is shown floored to two decimals — exactly the basis points,
no floats — and the bar the same way: "84.99% < 85.00%".
"""

from __future__ import annotations


def percent_of_bp(bp: int) -> str:
    """Basis points as a percentage with two decimals, exact: 8499 → "84.99%", 8500 → "85.00%", -5 → "-0.05%"."""
    sign = "-" if bp < 0 else ""
    whole, hundredths = divmod(abs(bp), 100)
    return f"{sign}{whole}.{hundredths:02d}%"
