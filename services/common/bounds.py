"""Totals over an unbounded number of rows, summed exactly and reported saturated (SPEC D2).

``[bounds]`` makes every product or sum over *bounded* values fit a signed
64-bit integer (``services.common.rules.OVERFLOW_GUARDS``). A total over rows
whose number has no bound — a flash sale's revenue across any number of
restocks, a store's refund ledger over the years, what one expiry pass
refunded — has no such proof. Such a total is computed exactly (Python
integers, or the split sum below in SQL) and *reported* saturated: the largest
int64 means "at least this much". It never raises and never wraps.

SQLite's ``sum()`` raises "integer overflow" past int64 (and ``total()`` is a
float, inexact past 2^53), so a column is summed in two halves the database
can add without overflow: the high part ``value >> 32`` and the low part
``value & 0xFFFFFFFF`` (two's complement, so exact for any int64 value). Each
half sums to at most about 2^31 × rows, which fits 64 bits for up to 2^31 rows
per total; the halves are joined here in Python's exact integers. PostgreSQL
takes the same two sums (its ``sum(bigint)`` is exact anyway).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, literal_column
from sqlalchemy.sql.elements import ColumnElement

from services.common.validation import MAX_INT64

LOW_BITS = 32
LOW_MASK = (1 << LOW_BITS) - 1


def saturated(total: int, most: int = MAX_INT64) -> int:
    """``total`` as a field reports it: itself when it fits, else the field's largest value (``most``: int64,
    or ``MAX_INT32`` for an int32 count); a total here is never negative.

    Used for totals over unbounded rows only; a value the platform stores or
    compares (a stock, a price) is refused past its bound instead (D2).
    """
    return max(0, min(most, total))


def split_sum(column: Any) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """The two SQL sums whose join (``joined_sum``) is the exact sum of ``column`` (no overflow on SQLite)."""
    high = func.coalesce(func.sum(column.op(">>")(literal_column(str(LOW_BITS)))), 0)
    low = func.coalesce(func.sum(column.op("&")(literal_column(str(LOW_MASK)))), 0)
    return high, low


def joined_sum(high: Any, low: Any) -> int:
    """The exact sum from the two halves ``split_sum`` selected (the database may answer them as Decimal)."""
    return (int(high or 0) << LOW_BITS) + int(low or 0)
