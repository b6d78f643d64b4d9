"""A throwaway PostgreSQL database per test, on the server TEST_DATABASE_URL names.

Tests that need PostgreSQL skip when it is unreachable, unless
REQUIRE_POSTGRES=1 (CI), which turns a missing server into a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import asyncpg
import pytest
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql://127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_URL)


def _dsn(database: str | None = None) -> str:
    url = make_url(server_url()).set(drivername="postgresql")
    if database:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def _run(coro):  # type: ignore[no-untyped-def]
    # Runs on a private loop so it works inside and outside async tests.
    result: list[object] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error.append(exc)

    import threading

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0] if result else None


async def _execute(sql: str, database: str | None = None) -> None:
    conn = await asyncpg.connect(_dsn(database), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@cache
def available() -> bool:
    try:
        _run(_execute("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def require() -> None:
    if available():
        return
    message = f"PostgreSQL not reachable at {server_url()}"
    if os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " and REQUIRE_POSTGRES=1")
    pytest.skip(message)


@contextmanager
def fresh_database(label: str = "t") -> Iterator[str]:
    """Creates an empty database; yields its URL; drops it afterwards."""
    require()
    name = f"qun_{label}_{uuid.uuid4().hex[:10]}"
    _run(_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield _dsn(name)
    finally:
        _run(_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
