"""Rows of a statement run on a driver directly (SQLite's sqlite3, PostgreSQL's asyncpg).

The hot paths read rows by column name (``row.member_count``) and use the part of
SQLAlchemy's ``Result`` below; a statement run on the driver answers with the same.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator
from typing import Any

from sqlalchemy import exc


class Unsupported(Exception):
    """The statement needs SQLAlchemy's execution (a name that is no attribute name, say)."""


class DriverRows:
    """The rows of one statement, with the part of SQLAlchemy's ``Result`` the hot paths use."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if not self._rows:
            raise exc.NoResultFound("No row was found when one was required")
        if len(self._rows) > 1:
            raise exc.MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self._rows[0]

    def all(self) -> list[Any]:
        return list(self._rows)

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> DriverRows:
        return DriverRows([row[0] for row in self._rows])


def row_type(keys: list[str]) -> Any:
    """A named tuple class of the columns, with ``_mapping`` as SQLAlchemy's rows have it (typed ``Any``: a class
    made at run time, whose ``_make`` no static type can name)."""
    try:
        base = namedtuple("Row", keys)  # type: ignore[misc]  # the fields are known at run time only
    except ValueError as error:  # a key that is no attribute name
        raise Unsupported(str(error)) from None
    row = type("Row", (base,), {"__slots__": (), "_mapping": property(lambda row: row._asdict())})
    return row
