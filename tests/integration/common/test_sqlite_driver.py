"""Statements marked ``on_driver`` run on the sqlite3 cursor and answer exactly as SQLAlchemy would.

Each case runs the same statement both ways on one SQLite database (the
driver path, then the same statement unmarked, which SQLAlchemy runs) and
compares the rows: values after each column type's processing (aware UTC
datetimes, booleans, JSON, NULLs), the names rows are read by, and the
errors callers catch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError, MultipleResultsFound, NoResultFound, StatementError

from services.common.db import Database
from services.common.sqlite_driver import DriverRows, on_driver
from services.common.sqltypes import UtcDateTime

metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", String(10), primary_key=True),
    Column("rank", Integer, nullable=False),
    Column("done", Boolean, nullable=False),
    Column("tags", JSON, nullable=True),
    Column("at", UtcDateTime(), nullable=True),
)
AT = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)

ADD = insert(notes).values(
    id=bindparam("id"), rank=bindparam("rank"), done=bindparam("done"), tags=bindparam("tags"), at=bindparam("at")
)
ADD_RETURNING = ADD.returning(notes.c.id, notes.c.done, notes.c.at)
BY_RANK = (
    select(notes, (notes.c.rank * 2).label("twice"), func.count().over().label("total"))
    .where(notes.c.rank >= bindparam("min_rank"))
    .order_by(notes.c.id)
)
BUMP = update(notes).where(notes.c.id == bindparam("note")).values(rank=notes.c.rank + 1).returning(notes.c.rank)
IN_LIST = select(notes.c.id).where(notes.c.id.in_(bindparam("ids", expanding=True))).order_by(notes.c.id)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield database
    finally:
        await database.close()


async def both(db: Database, statement: Any, params: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The statement's rows on the driver and through SQLAlchemy (each in a transaction rolled back)."""
    answers = []
    for marked in (on_driver(statement), statement):
        with pytest.raises(_Undo):
            async with db.write() as statements:
                answers.append((await statements.execute(marked, params)).all())
                raise _Undo
    return answers[0], answers[1]


class _Undo(Exception):
    pass


async def seed(db: Database) -> None:
    async with db.write() as statements:
        for n, (done, tags, at) in enumerate([(True, ["a", "b"], AT), (False, None, None), (True, {"k": 1}, AT)]):
            await statements.execute(on_driver(ADD), {"id": f"n{n}", "rank": n, "done": done, "tags": tags, "at": at})


async def test_rows_match_sqlalchemys_value_for_value_and_name_for_name(db: Database) -> None:
    await seed(db)
    driver, sqlalchemy = await both(db, BY_RANK, {"min_rank": 0})
    assert [tuple(row) for row in driver] == [tuple(row) for row in sqlalchemy]
    assert [row._mapping for row in driver] == [dict(row._mapping) for row in sqlalchemy]
    first = driver[0]
    assert (first.id, first.done, first.tags, first.at, first.twice, first.total) == ("n0", True, ["a", "b"], AT, 0, 3)
    assert first.at.tzinfo is UTC and driver[1].at is None and driver[1].done is False


async def test_writes_return_what_they_wrote(db: Database) -> None:
    params = {"id": "w1", "rank": 7, "done": False, "tags": None, "at": AT}
    driver, sqlalchemy = await both(db, ADD_RETURNING, params)
    assert [tuple(r) for r in driver] == [tuple(r) for r in sqlalchemy] == [("w1", False, AT)]
    await seed(db)
    driver, sqlalchemy = await both(db, BUMP, {"note": "n2"})
    assert [tuple(r) for r in driver] == [tuple(r) for r in sqlalchemy] == [(3,)]


async def test_the_rows_object_answers_like_sqlalchemys_result(db: Database) -> None:
    await seed(db)
    async with db.read() as statements:
        rows = await statements.execute(on_driver(BY_RANK), {"min_rank": 1})
        assert isinstance(rows, DriverRows)
        assert rows.first().id == "n1" and rows.scalar() == "n1"
        assert list(rows.scalars()) == ["n1", "n2"]
        with pytest.raises(MultipleResultsFound):
            rows.one()
        none = await statements.execute(on_driver(BY_RANK), {"min_rank": 9})
        assert none.first() is None and none.scalar() is None and none.all() == []
        with pytest.raises(NoResultFound):
            none.one()


async def test_a_broken_constraint_is_sqlalchemys_integrity_error(db: Database) -> None:
    await seed(db)
    with pytest.raises(IntegrityError):
        async with db.write() as statements:
            await statements.execute(on_driver(ADD), {"id": "n0", "rank": 1, "done": True, "tags": None, "at": None})


async def test_what_the_driver_path_cannot_run_goes_through_sqlalchemy(db: Database) -> None:
    await seed(db)
    async with db.read() as statements:
        listed = await statements.execute(on_driver(IN_LIST), {"ids": ["n0", "n2"]})  # an expanding IN list
        assert not isinstance(listed, DriverRows) and list(listed.scalars()) == ["n0", "n2"]
        with pytest.raises(StatementError, match="A value is required for bind parameter 'min_rank'"):
            await statements.execute(on_driver(BY_RANK), {})  # a parameter left out: SQLAlchemy's own error
