"""Each service's Alembic history builds exactly the tables its models describe, on SQLite and PostgreSQL.

Run through the command ops run (``python -m services.common.migrations <service> --url …``),
twice: a second upgrade changes nothing.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    CheckConstraint,
    ForeignKeyConstraint,
    MetaData,
    PrimaryKeyConstraint,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.engine import Connection

from services.common.db import create_engine
from services.common.migrations import SERVICES_WITH_DATABASES
from services.common.migrations import main as migrations_main
from services.common.settings import async_url

T = TypeVar("T")


async def _read(db_url: str, read: Callable[[Connection], T]) -> T:
    """What ``read`` finds in the migrated database, over a connection of its own."""
    engine = create_engine(async_url(db_url), pool_size=1)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", SERVICES_WITH_DATABASES)
async def test_migrations_match_the_models(service: str, db_url: str) -> None:
    for _ in range(2):
        assert await asyncio.to_thread(migrations_main, [service, "--url", db_url]) == 0
    metadata: MetaData = importlib.import_module(f"services.{service}.models").Base.metadata

    def differences(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    assert await _read(db_url, differences) == []
    assert await _read(db_url, tables) >= set(metadata.tables)


@pytest.mark.parametrize("service", SERVICES_WITH_DATABASES)
async def test_every_name_the_models_give_is_the_databases(service: str, db_url: str) -> None:
    """The naming convention names a constraint or index only as the migrations already named it.

    Alembic's comparison above ignores the names of CHECK constraints and primary keys; a name the
    models gave differently from the database would break the first migration that refers to it.
    """
    assert await asyncio.to_thread(migrations_main, [service, "--url", db_url]) == 0
    metadata: MetaData = importlib.import_module(f"services.{service}.models").Base.metadata
    kinds = {PrimaryKeyConstraint: "pk", UniqueConstraint: "uq", CheckConstraint: "ck", ForeignKeyConstraint: "fk"}
    named = {
        (kinds[type(constraint)], table.name, str(constraint.name))
        for table in metadata.tables.values()
        for constraint in table.constraints
        if type(constraint) in kinds and constraint.name is not None
    }
    named |= {("ix", table.name, str(index.name)) for table in metadata.tables.values() for index in table.indexes}

    def database_names(connection: Connection) -> set[tuple[str, str, str]]:
        found = inspect(connection)
        names: set[tuple[str, str, str]] = set()
        for table in found.get_table_names():
            names.add(("pk", table, str(found.get_pk_constraint(table).get("name"))))
            names |= {("uq", table, str(u["name"])) for u in found.get_unique_constraints(table)}
            names |= {("ck", table, str(c["name"])) for c in found.get_check_constraints(table)}
            names |= {("fk", table, str(f["name"])) for f in found.get_foreign_keys(table)}
            names |= {("ix", table, str(i["name"])) for i in found.get_indexes(table)}
        return names

    have = await _read(db_url, database_names)
    if not db_url.startswith("postgresql"):
        # SQLite keeps no names of primary keys, and its unique constraints' only in the table's DDL.
        named = {name for name in named if name[0] not in ("pk",)}
    assert sorted(named - have) == []


@pytest.mark.parametrize("service", SERVICES_WITH_DATABASES)
async def test_primary_keys_have_the_models_column_order(service: str, db_url: str) -> None:
    """A key's order is what a sharded database distributes by (ADR 0014); Alembic's comparison ignores it."""
    assert await asyncio.to_thread(migrations_main, [service, "--url", db_url]) == 0
    metadata: MetaData = importlib.import_module(f"services.{service}.models").Base.metadata

    def keys(connection: Connection) -> dict[str, list[str]]:
        found = inspect(connection)
        return {table: found.get_pk_constraint(table)["constrained_columns"] for table in metadata.tables}

    assert await _read(db_url, keys) == {
        name: [c.name for c in table.primary_key.columns] for name, table in metadata.tables.items()
    }
