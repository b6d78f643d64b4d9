"""One page of rows in (time, id) order, resumed after the last (time, id) a caller saw.

Every listing that answers with a keyset page token (``page_tokens.encode_keyset``)
reads its rows here: the rows after the cursor, one more than the page to know
whether another page follows, and the cursor of the next page. The cursor is
compared as a row value, ``(time, id) > (t, i)``, which an index over
(time, id) serves as one range (PostgreSQL and SQLite alike).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, literal, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")
Cursor = tuple[datetime, str]


async def keyset_page(
    session: AsyncSession,
    query: Select[tuple[T]],
    when: InstrumentedAttribute[Any],
    key: InstrumentedAttribute[Any],
    after: Cursor | None,
    limit: int,
    *,
    newest_first: bool = False,
) -> tuple[list[T], Cursor | None]:
    """Up to ``limit`` rows of ``query`` after ``after`` in (``when``, ``key``) order, and the next page's cursor.

    A row whose ``when`` is unset (NULL) ends the listing: it has no position to resume after.
    """
    if after is not None:
        at, last = after
        row, cursor = tuple_(when, key), tuple_(literal(at, when.type), literal(last, key.type))
        query = query.where(row < cursor if newest_first else row > cursor)
    order = (when.desc(), key.desc()) if newest_first else (when, key)
    rows = list(await session.scalars(query.order_by(*order).limit(limit + 1)))
    page = rows[:limit]
    if len(rows) <= limit or not page:
        return page, None
    tail = page[-1]
    stamp = getattr(tail, when.key)
    return page, ((stamp, getattr(tail, key.key)) if stamp is not None else None)
