"""Facts loaded in bulk past the ingestion, as a migration from another system would load them.

Orders and follows are written straight into the eligibility database (COPY on
PostgreSQL, chunked inserts on SQLite); the old-customer fan counts (P3) are
then recounted from them (``services.eligibility.old_fans``), as an operator
does after such a load.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from services.common.db import Database
from services.common.rules import Rules
from services.eligibility.models import FollowRow, PaidOrderRow
from services.eligibility.old_fans import recount

CHUNK = 20_000
ORDER_COLUMNS = ("store_id", "order_id", "consumer_id", "amount_fen", "paid_at")
FOLLOW_COLUMNS = ("store_id", "consumer_id", "following")


async def load(
    url: str, rules: Rules, orders: Iterable[tuple[object, ...]] = (), follows: Iterable[tuple[object, ...]] = ()
) -> float:
    """Loads the rows, then recounts every store's old-customer fans; returns the recount's seconds."""
    postgres = make_url(url).get_backend_name() == "postgresql"
    for model, columns, rows in ((PaidOrderRow, ORDER_COLUMNS, orders), (FollowRow, FOLLOW_COLUMNS, follows)):
        await (_copy if postgres else _insert)(url, model, columns, rows)
    started = time.perf_counter()
    await recount(url, rules)
    return time.perf_counter() - started


async def _copy(url: str, model: Any, columns: Sequence[str], rows: Iterable[tuple[object, ...]]) -> None:
    """PostgreSQL: one COPY, then ANALYZE.

    The planner reads table statistics, which autovacuum refreshes only some
    time after a bulk load; until then a store's queries may pick plans made
    for an empty table. A migration from another system analyses what it
    loaded; so does this one.
    """
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        table = model.__tablename__
        await conn.copy_records_to_table(table, records=rows, columns=list(columns))
        await conn.execute(f"ANALYZE {table}")
    finally:
        await conn.close()


async def _insert(url: str, model: Any, columns: Sequence[str], rows: Iterable[tuple[object, ...]]) -> None:
    """SQLite: inserts in chunks, through the model's column types (SQLite keeps times as naive UTC).

    No ANALYZE here: the services never analyse their SQLite files, and the
    rows should meet the query plans they really run with.
    """
    db = Database(url, pool_size=1)
    try:
        found = iter(rows)
        while chunk := [dict(zip(columns, row, strict=True)) for row in itertools.islice(found, CHUNK)]:
            async with db.transaction() as session:
                await session.execute(insert(model), chunk)
    finally:
        await db.close()
