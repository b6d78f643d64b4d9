"""``Database.read``/``write``: what each hot path's block of Core statements runs in.

On PostgreSQL a read runs in autocommit (no BEGIN and COMMIT round trips; at
READ COMMITTED each statement has its own snapshot in a transaction too), and
a write is one transaction that rolls back as a whole. On SQLite both are
transactions on the process's one connection.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.common.db import Database
from services.common.settings import async_url

pytestmark = pytest.mark.postgres

XACT = text("SELECT pg_current_xact_id()::text")


async def test_a_read_on_postgresql_runs_each_statement_in_its_own_transaction(pg_url: str) -> None:
    db = Database(async_url(pg_url), pool_size=1)
    try:
        async with db.read() as statements:
            first, second = [await statements.scalar(XACT) for _ in range(2)]
        assert first != second  # autocommit: no BEGIN ... COMMIT around the block
        async with db.write() as statements:
            first, second = [await statements.scalar(XACT) for _ in range(2)]
        assert first == second  # one transaction
        async with db.read() as statements:  # the pool gave the connection back in its own isolation level
            assert await statements.scalar(text("SHOW transaction_isolation")) == "read committed"
    finally:
        await db.close()


async def test_a_failed_write_on_postgresql_leaves_nothing(pg_url: str) -> None:
    db = Database(async_url(pg_url), pool_size=1)
    try:
        async with db.write() as statements:
            await statements.execute(text("CREATE TABLE notes (id int PRIMARY KEY)"))
        with pytest.raises(RuntimeError):
            async with db.write() as statements:
                await statements.execute(text("INSERT INTO notes VALUES (1)"))
                raise RuntimeError("a refusal after the first statement")
        async with db.read() as statements:
            assert await statements.scalar(text("SELECT count(*) FROM notes")) == 0
    finally:
        await db.close()
