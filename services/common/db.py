"""SQLAlchemy 2.x asyncio storage: SQLite by default, PostgreSQL in production.

One transaction per unit of work: ``db.transaction()`` gives an ORM session,
``db.read()``/``db.write()`` give ``Statements`` for the hot paths' prebuilt
Core statements (no identity map or unit of work to pay for). SQLite gets one
connection per process, taken in turn, its statements run on the event
loop's thread (``sqlite_inline``; the hot paths' statements straight on the
driver, ``sqlite_driver``), and ``BEGIN IMMEDIATE`` for writes so
concurrent writers in the embedded mode queue instead of failing with
"database is locked";
PostgreSQL gets a pool, and the caps are guarded by row locks and
conditional updates in the repositories (``for_update`` is a no-op on SQLite,
whose writers are already serialised).

A lost database connection (the server restarting, the network) is not a bug:
the pool tests each connection as it hands it out (a ping on checkout), so the
first request after a restart gets a fresh one, and a transaction that fails
because the server is gone raises ``Unavailable`` (gRPC UNAVAILABLE, which a
caller with a request id retries) rather than an unexpected error (INTERNAL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Connection, Dialect, Engine, Result, ScalarResult, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.base import Executable

from services.common import sqlite_inline, tracing
from services.common.driver_rows import DriverRows
from services.common.errors import ServiceError, Unavailable
from services.common.pg_driver import PgDriver
from services.common.sqlite_driver import PreparedStatements

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "qun_read_only"
# asyncpg's errors for a server that is gone, shutting down or not yet accepting connections.
_ASYNCPG_DISCONNECTS = frozenset(
    {
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "CannotConnectNowError",
        "PostgresConnectionError",
        "ClientCannotConnectError",
        "ConnectionRejectionError",
        "AdminShutdownError",
        "CrashShutdownError",
        "ServerNotReadyError",
        "InterfaceError",
        "InternalClientError",
    }
)
# asyncpg's errors for a server that is up but takes no more connections now.
_ASYNCPG_BUSY = frozenset({"TooManyConnectionsError"})


def is_disconnect(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) means the database cannot be reached."""
    return any(_disconnect(cause) for cause in _chain(error))


def is_unavailable(error: BaseException) -> bool:
    """Whether the database cannot serve the request now: gone, or out of connections (a retry may pass).

    A server at ``max_connections`` refuses new ones; with several replicas on
    one PostgreSQL that is load, not a bug, so the caller sees UNAVAILABLE.
    """
    return any(_disconnect(cause) or _asyncpg_error(cause, _ASYNCPG_BUSY) for cause in _chain(error))


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what caused it, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _disconnect(error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, (ConnectionError, TimeoutError, exc.TimeoutError)):
        return True
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
        return True
    return _asyncpg_error(error, _ASYNCPG_DISCONNECTS)


def _asyncpg_error(error: BaseException, names: frozenset[str]) -> bool:
    return type(error).__module__.startswith("asyncpg") and type(error).__name__ in names


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """The asyncio engine for ``url`` (the tools' and migrations' entry; services use ``Database``)."""
    return _engines(url, pool_size)[0]


def _engines(url: str, pool_size: int) -> tuple[AsyncEngine, Engine | None]:
    """The asyncio engine, and for SQLite a plain engine on the same single connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ":memory:"
        if database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One connection for the process (SQLite serialises writers anyway), taken in turn by
        # ``Database``'s lock: a queue pool would make every checkout a task and a loop turn.
        shared = sqlite_inline.SharedConnection(database)
        engine = create_async_engine(url, poolclass=StaticPool, async_creator=shared.connect_async)
        plain = create_sync_engine("sqlite://", poolclass=StaticPool, creator=shared.connect)
        _sqlite_immediate_transactions(engine.sync_engine)
        _sqlite_immediate_transactions(plain)
        return engine, plain
    # The hot paths' statements have a pool of their own (``pg_driver``, ``pool_size``); the ORM's
    # units of work, fewer and not on the hot paths, share a smaller one (they wait for a connection
    # rather than open more), so replicas beside each other stay well inside a server's max_connections.
    share = max(1, pool_size * 3 // 10)
    engine = create_async_engine(url, pool_size=share, max_overflow=max(1, share - 1), pool_timeout=30)
    _broken_connections_are_disconnects(engine)
    _ping_on_checkout(engine)
    return engine, None


def _ping_on_checkout(engine: AsyncEngine) -> None:
    """Each connection is tried as the pool hands it out; a dead one is replaced, not handed out.

    In place of ``pool_pre_ping``, whose ping lets some of asyncpg's errors for a
    connection the server dropped escape (``InternalClientError``: "another
    operation is in progress") instead of replacing the connection. Raising
    ``DisconnectionError`` here makes the pool discard it and connect anew.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        try:
            dbapi_connection.ping()
        except Exception as error:
            if is_disconnect(error):
                raise exc.DisconnectionError("the connection was dropped") from error
            raise


def _broken_connections_are_disconnects(engine: AsyncEngine) -> None:
    """A connection left mid-operation (a query cancelled by a deadline) is thrown away, not reused.

    asyncpg then answers "another operation is in progress" to everything, which
    SQLAlchemy does not count as a disconnect: the pool would hand the broken
    connection out again (the ping fails, the request fails with INTERNAL).
    Marked as a disconnect, the ping replaces it and a query on it is retried
    by the caller as UNAVAILABLE.
    """

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: Any) -> None:
        if not context.is_disconnect and is_disconnect(context.original_exception):
            context.is_disconnect = True


def _sqlite_immediate_transactions(sync_engine: Engine) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, issue BEGIN (see the begin hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL sync cannot corrupt the database; a power cut may lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Straight to the driver: the statement needs none of SQLAlchemy's execution machinery.
        # A read takes a snapshot (deferred BEGIN under WAL) and never waits for the write lock.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.connection.dbapi_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Statements(Protocol):
    """Core statements in one transaction (``Database.read``/``write``), on either kind of engine.

    ``execute`` answers with SQLAlchemy's ``Result``, or on SQLite for a statement
    run on the driver with ``DriverRows``, which has the part of ``Result`` the
    hot paths use (``first``, ``one``, ``all``, ``scalar``, ``scalars``, iteration).
    """

    @property
    def dialect(self) -> Dialect: ...

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Result[Any] | DriverRows: ...

    async def scalar(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> Any: ...

    async def scalars(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> ScalarResult[Any] | DriverRows: ...


class PlainStatements:
    """SQLite's: run at once on the loop's thread, with none of the asyncio layer's hand-offs.

    A statement marked ``ON_DRIVER`` runs on the sqlite3 cursor, compiled once
    (``sqlite_driver``); any other through SQLAlchemy. Both in the same
    transaction, on the same connection.
    """

    def __init__(self, connection: Connection, prepared: PreparedStatements) -> None:
        self._connection = connection
        self._prepared = prepared
        self._cursor: Any = None
        self.dialect = connection.dialect

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Result[Any] | DriverRows:
        prepared = self._prepared.get(statement)
        values = prepared.values(parameters or {}) if prepared is not None else None
        if prepared is None or values is None:
            return self._connection.execute(statement, parameters)
        if self._cursor is None:
            self._cursor = self._connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]  # open while the transaction runs
        return prepared.run(self._cursor, values, self.dialect)

    async def scalar(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def scalars(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> ScalarResult[Any] | DriverRows:
        return (await self.execute(statement, parameters)).scalars()


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine, self._plain = _engines(url, pool_size)
        tracing.instrument_engine(self.engine.sync_engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite: the one connection is taken in turn (see create_engine).
        self._turn = None if self.is_postgres else asyncio.Lock()
        self._prepared = PreparedStatements(self._plain.dialect) if self._plain is not None else None
        self._plain_connection: Connection | None = None  # SQLite: kept open, used in turn
        # PostgreSQL: the hot paths' statements on asyncpg's own pool (``pg_driver``).
        self._pg = PgDriver(url, pool_size) if self.is_postgres else None

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed on success, rolled back on error."""
        async with self._connection_turn(), self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Statements]:
        """A read-only transaction for Core statements, for the hot read paths.

        No ORM session: a statement through Core needs none of its identity map
        or unit of work (docs/adr/0006-hot-paths-off-the-orm.md). On SQLite
        the transaction is deferred: it takes no write lock, so it never waits
        for another process's writer. On PostgreSQL the statements run in
        autocommit: at READ COMMITTED each statement takes its own snapshot
        inside a transaction too, so BEGIN and COMMIT would add two round trips
        and nothing else. (The read paths take no locks.)
        """
        async with self._connection_turn(), self._statements(read_only=True) as statements:
            yield statements

    @asynccontextmanager
    async def single(self) -> AsyncIterator[Statements]:
        """One statement that is its own transaction (PostgreSQL: autocommit, no BEGIN/COMMIT round trips).

        For a write done by one statement alone, such as a server-side function
        that locks, checks and writes (the join's ``qun_join``).
        """
        async with self._connection_turn(), self._statements(read_only=True) as statements:
            yield statements

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Statements]:
        """A transaction for Core statements, for the hot write paths (the join)."""
        async with self._connection_turn(), self._statements(read_only=False) as statements:
            yield statements

    @asynccontextmanager
    async def _statements(self, *, read_only: bool) -> AsyncIterator[Statements]:
        if self._plain is not None:
            # SQLite: the plain engine on the loop's thread. Its connection stays open between transactions
            # (taken in turn, like the one connection under it): docs/adr/0006-hot-paths-off-the-orm.md.
            assert self._prepared is not None
            if self._plain_connection is None or self._plain_connection.closed:
                self._plain_connection = self._plain.connect()
            plain = self._plain_connection.execution_options(**{READ_ONLY: read_only})
            with plain.begin():
                yield PlainStatements(plain, self._prepared)
            return
        assert self._pg is not None
        async with self._pg.statements(read_only=read_only) as statements:
            yield statements

    @asynccontextmanager
    async def _connection_turn(self) -> AsyncIterator[None]:
        """Waits for the connection (SQLite), and reports a lost database as UNAVAILABLE."""
        try:
            if self._turn is None:
                yield
            else:
                async with self._turn:
                    yield
        except ServiceError:
            raise
        except Exception as error:
            if is_unavailable(error):
                raise Unavailable("the database is unavailable; retry") from error
            raise

    async def ping(self) -> None:
        async with self._connection_turn(), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._plain_connection is not None:
            self._plain_connection.close()
        await self.engine.dispose()
        if self._plain is not None:
            self._plain.dispose()
