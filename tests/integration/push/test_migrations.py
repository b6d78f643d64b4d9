"""The push Alembic history builds exactly the tables the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from services.common.db import create_engine
from services.common.migrations import main as migrations_main
from services.common.settings import async_url
from services.push.models import Base


async def test_migrations_match_the_models(db_url: str) -> None:
    for _ in range(2):  # the command ops run, twice: idempotent
        assert await asyncio.to_thread(migrations_main, ["push", "--url", db_url]) == 0

    def differences(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))

    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    engine = create_engine(async_url(db_url), pool_size=1)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
            assert await connection.run_sync(tables) >= set(Base.metadata.tables)
    finally:
        await engine.dispose()
