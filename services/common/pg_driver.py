"""PostgreSQL's hot statements run on asyncpg itself: each Core statement compiled once, prepared per connection.

SQLAlchemy's asyncio layer costs several times what asyncpg needs to send a
prepared statement and read its rows (measured in ADR 0008). ``Database.read``/``write`` on PostgreSQL run on
connections of a pool of asyncpg's own (``PgDriver``): each Core statement is
compiled once for PostgreSQL by SQLAlchemy itself (the SQL, the order of its
parameters, each type's bind and result processing) and asyncpg prepares it
once per connection (its statement cache). The SQL is still written once, in
Core, and the schema and migrations stay SQLAlchemy's and Alembic's; the ORM
sessions (``Database.transaction``) keep SQLAlchemy's engine.

A read runs in autocommit (no BEGIN/COMMIT round trips: at READ COMMITTED each
statement takes its own snapshot anyway); a write in one transaction.
asyncpg's errors are raised as SQLAlchemy's (a unique violation is an
``IntegrityError``), so callers handle one kind, and a connection the server
dropped is replaced: the first statement of a unit of work that finds its
connection dead is tried once more on a fresh one (nothing of it ran).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import exc
from sqlalchemy.dialects.postgresql import asyncpg as sa_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.sql.base import Executable

from services.common import tracing
from services.common.driver_rows import CompiledStatement, DriverRows, row_type

DIALECT = sa_asyncpg.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's dialect classes are untyped
# asyncpg's errors for a connection that is gone (the server restarted, the network broke).
CONNECTION_LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
    OSError,
)


class PgPrepared(CompiledStatement):
    """One statement compiled for PostgreSQL: its SQL, its parameters in order, its columns' processors.

    A statement with expanding parameters (``IN`` a list) is rendered for each
    call's lists (``construct_expanded_state``); asyncpg prepares each shape once.
    """

    __slots__ = ("compiled", "expanding")

    def __init__(self, statement: Executable) -> None:
        compiled = statement.execution_options().compile(dialect=DIALECT)  # type: ignore[attr-defined]  # every statement given is a ClauseElement
        if compiled.positiontup is None:
            raise exc.ArgumentError("the PostgreSQL driver path takes positional statements only")
        self.compiled = compiled
        self.expanding = bool(compiled.literal_execute_params or compiled.post_compile_params)
        self.read_compiled(statement, compiled, DIALECT)

    def bound(self, parameters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and its parameters in order, processed, for one call."""
        if self.expanding:
            state = self.compiled.construct_expanded_state(dict(parameters))
            processors = state.processors
            return state.statement, [
                processors[name](state.parameters[name]) if name in processors else state.parameters[name]
                for name in state.positiontup or ()
            ]
        values = self.values(parameters)
        if values is None:
            missing = [name for name in self.names if name not in parameters and name not in self.defaults]
            raise exc.ArgumentError(f"parameter {missing[0]!r} is missing")
        return self.sql, values

    def rows(self, records: list[asyncpg.Record]) -> DriverRows:
        if not records:
            return DriverRows([])
        if self.row is None:  # a text statement: its columns are what the server answered
            return DriverRows([row_type(list(record.keys()))._make(record) for record in records])
        return self.made(records)


class PgStatements:
    """Core statements on one asyncpg connection (``Database.read``/``write`` on PostgreSQL).

    A read's first statement that finds its connection gone (the server
    restarted since the pool last used it) runs again on a fresh connection:
    nothing of the unit of work has run yet.
    """

    dialect = DIALECT

    def __init__(self, driver: PgDriver, pool: asyncpg.Pool, connection: asyncpg.Connection) -> None:
        self._driver = driver
        self._pool = pool
        self.connection = connection
        self._fresh = True

    async def execute(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> DriverRows:
        prepared = self._driver.prepared(statement)
        sql, values = prepared.bound(parameters or {})
        if tracing.recording():  # a sampled request's span (none at all when tracing is off)
            with tracing.sql_span(sql, "postgresql"):
                return await self._run(prepared, sql, values)
        return await self._run(prepared, sql, values)

    async def _run(self, prepared: PgPrepared, sql: str, values: list[Any]) -> DriverRows:
        try:
            records = await self.connection.fetch(sql, *values)
        except CONNECTION_LOST:
            if not self._fresh:
                raise
            self.connection = await _replace(self._pool, self.connection)
            records = await self.connection.fetch(sql, *values)
        except asyncpg.PostgresError as error:
            raise _as_sqlalchemy(sql, values, error) from error
        finally:
            self._fresh = False
        return prepared.rows(records)

    async def scalar(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def scalars(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> DriverRows:
        return (await self.execute(statement, parameters)).scalars()


async def _replace(pool: asyncpg.Pool, dead: asyncpg.Connection) -> asyncpg.Connection:
    """A fresh connection for a dead one (which the pool then replaces)."""
    dead.terminate()
    await pool.release(dead)
    return await pool.acquire()


def _as_sqlalchemy(sql: str, values: list[Any], error: asyncpg.PostgresError) -> exc.DBAPIError:
    """asyncpg's error as the SQLAlchemy error the rest of the code handles (unique key → IntegrityError)."""
    if isinstance(error, asyncpg.exceptions.IntegrityConstraintViolationError):
        kind: type[exc.DBAPIError] = exc.IntegrityError
    elif isinstance(error, asyncpg.exceptions.DataError):
        kind = exc.DataError
    elif isinstance(
        error, asyncpg.exceptions.OperatorInterventionError | asyncpg.exceptions.InsufficientResourcesError
    ):
        kind = exc.OperationalError
    else:
        kind = exc.DBAPIError
    return kind(sql, values, error)


def _as_text(value: str) -> str:
    return value


async def _init_connection(connection: asyncpg.Connection) -> None:
    """JSON as SQLAlchemy's asyncpg dialect sets it up: its bind processor already wrote the text,
    and a value read comes back as Python values."""
    for name in ("json", "jsonb"):
        await connection.set_type_codec(name, encoder=_as_text, decoder=json.loads, schema="pg_catalog")


class PgDriver:
    """asyncpg's own pool for one database, and each statement's compiled form, made once and kept."""

    def __init__(self, url: str, pool_size: int) -> None:
        parsed = make_url(url).set(drivername="postgresql")
        self._dsn = parsed.render_as_string(hide_password=False)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._prepared: dict[int, tuple[Executable, PgPrepared]] = {}

    def prepared(self, statement: Executable) -> PgPrepared:
        known = self._prepared.get(id(statement))
        if known is not None and known[0] is statement:
            return known[1]
        prepared = PgPrepared(statement)
        self._prepared[id(statement)] = (statement, prepared)
        return prepared

    async def _pool_ready(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, init=_init_connection, command_timeout=60
            )
        return self._pool

    @asynccontextmanager
    async def statements(self, *, read_only: bool) -> AsyncIterator[PgStatements]:
        """One unit of work: autocommit for a read, one transaction for a write.

        A write's BEGIN that finds its connection gone runs again on a fresh one.
        """
        pool = await self._pool_ready()
        statements = PgStatements(self, pool, await pool.acquire())
        try:
            if read_only:
                yield statements
                return
            try:
                transaction = statements.connection.transaction()
                await transaction.start()
            except CONNECTION_LOST:
                statements.connection = await _replace(pool, statements.connection)
                transaction = statements.connection.transaction()
                await transaction.start()
            statements._fresh = False
            try:
                yield statements
            except BaseException:
                with contextlib.suppress(Exception):  # a connection that broke mid-way: the pool drops it
                    await transaction.rollback()
                raise
            await transaction.commit()
        finally:
            await pool.release(statements.connection)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
