"""SQLite for SQLAlchemy's asyncio engine, run on the event loop's own thread.

aiosqlite runs every statement on a helper thread and hands the result back
through the event loop. With one connection (SQLite serialises writers
anyway) that makes each transaction hold the connection for as many loop
turns as it has statements, and under load a loop turn is long: every other
request's work runs between two statements of one transaction. The
connection's hold time, not the database, then caps throughput
(docs/adr/0006-hot-paths-off-the-orm.md has the measurement).

A local SQLite statement takes microseconds, far less than a thread hand-off,
so here the statements run inline: each ``await`` below completes without
suspending, a transaction's statements run back to back, and the connection is
held only for the CPU time they take. The price is that a statement waiting for
another *process's* write lock (``busy_timeout``) blocks this process's loop
while it waits; qun's SQLite mode is one process per database file, where that
does not happen (PostgreSQL is the multi-replica mode).

The objects mimic the part of aiosqlite's API that SQLAlchemy's ``aiosqlite``
dialect calls, so the dialect (its SQL, types and error mapping) is unchanged;
they are handed to it with ``create_async_engine(..., async_creator=...)``.
The same connection also backs a plain (synchronous) engine for the hot
paths' Core statements (``SharedConnection``, ``services.common.db.Statements``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _RunNow:
    """Stands in for aiosqlite's queue of work for its thread: the work runs at once.

    The dialect's ``isolation_level`` setter puts ``(future, function)`` on
    that queue and waits for the future.
    """

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as error:
            future.set_exception(error)


class InlineConnection:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._tx = _RunNow()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        return InlineCursor(self._conn.execute(sql, parameters))

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)


class SharedConnection:
    """The process's one connection to a SQLite database, for both of its engines.

    ``Database`` drives it through an asyncio engine (ORM sessions) and a plain
    one (Core statements on the hot paths, which then skip the asyncio layer's
    hand-offs altogether); taking it in turn is ``Database``'s job.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self._connection: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        """The ``creator`` of the plain engine."""
        if self._connection is None:
            # The pool may close the connection from another thread (engine disposal at exit).
            self._connection = sqlite3.connect(self.database, check_same_thread=False)
        return self._connection

    async def connect_async(self) -> InlineConnection:
        """The ``async_creator`` of the asyncio engine."""
        return InlineConnection(self.connect())
