"""SQLite's hot statements run on the driver: each prebuilt Core statement compiled once.

On SQLite a statement is a local call, and SQLAlchemy's execution around it
(the execution context, parameter and result processing through its generic
machinery, the result object) costs more than the statement
(docs/adr/0006-hot-paths-off-the-orm.md). A statement marked
with ``ON_DRIVER`` (``statement.execution_options(**ON_DRIVER)``) is compiled
once for SQLite by SQLAlchemy itself, and then run on the sqlite3 cursor with
the SQL, the parameter order and each column type's own bind and result
processors that compilation gave. The SQL is still written once, in Core, and
PostgreSQL runs the same statement through SQLAlchemy.

Only what this path can run exactly as SQLAlchemy would takes it: a statement
with expanding (``IN``) parameters, or whose columns need defaults computed in
Python, or a call that leaves out a parameter, goes through SQLAlchemy.
Driver errors are raised as SQLAlchemy's (an ``IntegrityError`` is an
``IntegrityError``), so callers handle one kind.
"""

from __future__ import annotations

import sqlite3
from typing import Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.base import Executable

from services.common import tracing
from services.common.driver_rows import CompiledStatement, DriverRows, Unsupported

ON_DRIVER_OPTION = "qun_on_driver"
ON_DRIVER = {ON_DRIVER_OPTION: True}

Statement = TypeVar("Statement", bound=Executable)


def on_driver(statement: Statement) -> Statement:
    """Marks a prebuilt statement to run on the sqlite3 driver on SQLite (no effect elsewhere)."""
    return statement.execution_options(**ON_DRIVER)


class Prepared(CompiledStatement):
    """One statement compiled for SQLite: its SQL, its parameters in order, its columns' processors."""

    __slots__ = ("statement",)

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        # A copy is compiled and asked about: a DML statement remembers what it was asked, and a
        # RETURNING copy made of it later (PostgreSQL's folded join writes) would have no columns.
        compiled = statement.execution_options().compile(dialect=dialect)  # type: ignore[attr-defined]  # every statement given is a ClauseElement
        if compiled.positiontup is None or compiled.literal_execute_params or compiled.post_compile_params:
            raise Unsupported("expanding or literal-execute parameters")
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise Unsupported("column defaults computed in Python")
        self.statement = statement
        self.read_compiled(statement, compiled, dialect)

    def run(self, cursor: sqlite3.Cursor, values: list[Any], dialect: Dialect) -> DriverRows:
        """Runs with ``values`` (from ``values()``); driver errors raised as SQLAlchemy's."""
        if tracing.recording():  # a sampled request's span (none at all when tracing is off)
            with tracing.sql_span(self.sql, "sqlite"):
                return self._run(cursor, values, dialect)
        return self._run(cursor, values, dialect)

    def _run(self, cursor: sqlite3.Cursor, values: list[Any], dialect: Dialect) -> DriverRows:
        try:
            cursor.execute(self.sql, values)
            fetched = cursor.fetchall() if self.row is not None else []
        except dialect.loaded_dbapi.Error as error:
            raise exc.DBAPIError.instance(self.sql, values, error, dialect.loaded_dbapi.Error) from error
        if not fetched:
            return DriverRows([])
        return self.made(fetched)


class PreparedStatements:
    """The prepared form of each marked statement, made on first use and kept (such statements live for ever)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._prepared: dict[int, tuple[Executable, Prepared | None]] = {}

    def get(self, statement: Executable) -> Prepared | None:
        """``statement``'s prepared form, or None when SQLAlchemy must run it."""
        if not statement.get_execution_options().get(ON_DRIVER_OPTION):
            return None
        known = self._prepared.get(id(statement))
        if known is not None and known[0] is statement:
            return known[1]
        try:
            prepared: Prepared | None = Prepared(statement, self._dialect)
        except Unsupported:
            prepared = None
        self._prepared[id(statement)] = (statement, prepared)
        return prepared
