"""The shared storage layer when PostgreSQL goes away: UNAVAILABLE, then back by itself.

Found by the fault suite (tests/faults): after a server restart every pooled
connection was dead and the next request on each failed with INTERNAL; a query
cancelled mid-flight (a deadline) left its connection busy in the pool, and
every later use of it failed with INTERNAL ("another operation is in
progress"). Now the pool tests connections as it hands them out, a broken one
is thrown away, and a transaction that cannot reach the server raises
``Unavailable`` (gRPC UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest
from sqlalchemy import make_url, text

from cli.stack import free_port
from services.common.db import Database, is_disconnect
from services.common.errors import Unavailable
from services.common.settings import async_url
from tests.support.postgres import _dsn

pytestmark = pytest.mark.postgres


async def select_one(db: Database) -> int:
    async with db.transaction() as session:
        return int((await session.execute(text("SELECT 1"))).scalar_one())


async def terminate_connections_to(url: str) -> int:
    """What a server restart does to a pool: every connection to the database dies."""
    admin = await asyncpg.connect(_dsn())
    try:
        database = url.rsplit("/", 1)[-1]
        terminated = len(
            await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        )
        # Termination is asynchronous; a restart is over before clients come back, so wait for it.
        for _ in range(100):
            left = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database
            )
            if left == 0:
                break
            await asyncio.sleep(0.05)
        return terminated
    finally:
        await admin.close()


async def test_the_pool_replaces_connections_the_server_dropped(pg_url: str) -> None:
    db = Database(async_url(pg_url), pool_size=3)
    try:
        await asyncio.gather(*(select_one(db) for _ in range(3)))  # the pool holds live connections
        assert await terminate_connections_to(pg_url) >= 1
        for _ in range(5):
            assert await select_one(db) == 1
    finally:
        await db.close()


async def test_a_query_cancelled_mid_flight_leaves_no_broken_connection_in_the_pool(pg_url: str) -> None:
    db = Database(async_url(pg_url), pool_size=1)

    async def slow() -> None:
        async with db.transaction() as session:
            await session.execute(text("SELECT pg_sleep(2)"))

    try:
        for _ in range(3):
            task = asyncio.create_task(slow())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        for _ in range(5):
            assert await select_one(db) == 1
    finally:
        await db.close()


async def test_a_connection_left_busy_is_thrown_away_not_handed_out_again(pg_url: str) -> None:
    db = Database(async_url(pg_url), pool_size=1)
    busy: asyncio.Future[object] | None = None
    try:
        with pytest.raises(Unavailable):
            async with db.transaction() as session:
                raw = (await (await session.connection()).get_raw_connection()).driver_connection
                busy = asyncio.ensure_future(raw.execute("SELECT pg_sleep(0.3)"))  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
                await session.execute(text("SELECT 1"))  # "another operation is in progress"
        for _ in range(3):
            assert await select_one(db) == 1
    finally:
        if busy is not None:
            await asyncio.gather(busy, return_exceptions=True)
        await db.close()


async def test_an_unreachable_server_is_unavailable_not_an_internal_error() -> None:
    db = Database(f"postgresql+asyncpg://127.0.0.1:{free_port()}/nothing", pool_size=1)
    try:
        with pytest.raises(Unavailable) as caught:
            await select_one(db)
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert caught.value.to_status().code == grpc.StatusCode.UNAVAILABLE.value[0]
    finally:
        await db.close()


async def test_a_server_out_of_connections_is_unavailable_not_an_internal_error(pg_url: str) -> None:
    """PostgreSQL at its connection limit refuses with SQLSTATE 53300: load, which a retry may pass.

    A role allowed no connections gets the same refusal as a server at
    ``max_connections`` (several replicas' pools on one server), without
    exhausting the shared server for the tests beside this one.
    """
    role = f"qun_full_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_dsn())
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    url = make_url(async_url(pg_url)).set(username=role).render_as_string(hide_password=False)
    db = Database(url, pool_size=1)
    try:
        with pytest.raises(Unavailable) as caught:
            await select_one(db)
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert isinstance(caught.value.__cause__, asyncpg.TooManyConnectionsError)
        assert not is_disconnect(caught.value.__cause__)  # the server is there: nothing to invalidate
    finally:
        await db.close()
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


def test_refusals_and_bugs_are_not_taken_for_disconnects() -> None:
    assert is_disconnect(ConnectionRefusedError())
    assert not is_disconnect(ValueError("a bug"))
    assert not is_disconnect(FileNotFoundError("no such file"))
