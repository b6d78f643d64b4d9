"""Rows of a statement run on a driver directly (SQLite's sqlite3, PostgreSQL's asyncpg).

The hot paths read rows by column name (``row.member_count``) and use the part of
SQLAlchemy's ``Result`` below; a statement run on the driver answers with the same.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.base import Executable

# A column type's bind or result processing for one dialect (None: the value passes as it is).
Processor = Callable[[Any], Any] | None


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


class CompiledStatement:
    """What both driver paths read off SQLAlchemy's compilation of one statement, once.

    The SQL, its parameters in order with each type's bind processing, the
    defaults of optional parameters, and what a row holds: a SELECT's columns,
    or what a write RETURNs, with each type's result processing.
    """

    __slots__ = ("sql", "names", "binds", "defaults", "row", "results")

    def read_compiled(self, statement: Executable, compiled: Any, dialect: Dialect) -> None:
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup)
        self.binds: tuple[Processor, ...] = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.names
        )
        self.defaults: dict[str, Any] = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }
        if isinstance(statement, Select):
            columns, keys = list(statement.selected_columns), list(statement.selected_columns.keys())
        else:
            columns = list(compiled.effective_returning or ())
            keys = [column.key for column in columns]  # type: ignore[misc]  # RETURNING lists table columns, all named
        self.row: Any = row_type(keys) if keys else None
        self.results: tuple[Processor, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )

    def values(self, parameters: Mapping[str, Any]) -> list[Any] | None:
        """The statement's parameters in order, processed; None when one it has no default for is missing."""
        values = []
        for name, process in zip(self.names, self.binds, strict=True):
            if name in parameters:
                value = parameters[name]
            elif name in self.defaults:
                value = self.defaults[name]
            else:
                return None
            values.append(process(value) if process is not None else value)
        return values

    def made(self, records: Sequence[Any]) -> DriverRows:
        """The driver's records as rows of this statement, each value through its type's result processing."""
        make, results = self.row._make, self.results
        if not any(results):
            return DriverRows([make(record) for record in records])
        return DriverRows(
            [make([v if p is None else p(v) for p, v in zip(results, record, strict=True)]) for record in records]
        )
