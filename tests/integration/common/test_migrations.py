"""Each service's Alembic history builds exactly the tables its models describe, on SQLite and PostgreSQL.

Run through the command ops run (``python -m services.common.migrations <service> --url …``),
twice: a second upgrade changes nothing.
"""

from __future__ import annotations

import asyncio
import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection

from services.common.db import create_engine
from services.common.migrations import SERVICES_WITH_DATABASES
from services.common.migrations import main as migrations_main
from services.common.settings import async_url


@pytest.mark.parametrize("service", SERVICES_WITH_DATABASES)
async def test_migrations_match_the_models(service: str, db_url: str) -> None:
    for _ in range(2):
        assert await asyncio.to_thread(migrations_main, [service, "--url", db_url]) == 0
    metadata: MetaData = importlib.import_module(f"services.{service}.models").Base.metadata

    def differences(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    engine = create_engine(async_url(db_url), pool_size=1)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
            assert await connection.run_sync(tables) >= set(metadata.tables)
    finally:
        await engine.dispose()
