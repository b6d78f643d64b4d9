"""The declarative base of every service's tables: its own ``MetaData``, qun's constraint names, its tenant column.

Each service has its own database and Alembic history, so each has its own
``MetaData``; they all name constraints by one convention, so a migration can
refer to a constraint by a name known in advance (``ck_items_stock_safe``)
on PostgreSQL and SQLite alike::

    class Base(NamedConstraints, DeclarativeBase):
        '''The campaigns database.'''

A CHECK constraint is named by its suffix (``name="stock_safe"`` on ``items``
is ``ck_items_stock_safe``). Primary and foreign keys created before a
service took the convention keep the names the database gave them: such a
base lists those kinds in ``unnamed`` and the convention leaves them alone
(naming them would make the models disagree with the database they
describe).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from sqlalchemy import MetaData, Table
from sqlalchemy.orm import DeclarativeBase

from services.common.sharding import SHARDING

NAMING_CONVENTION: Mapping[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def naming_convention(unnamed: tuple[str, ...] = ()) -> dict[str, str]:
    """The convention, less the kinds of constraint listed in ``unnamed``."""
    unknown = set(unnamed) - set(NAMING_CONVENTION)
    if unknown:
        raise ValueError(f"no such kind of constraint in the convention: {sorted(unknown)}")
    return {kind: pattern for kind, pattern in NAMING_CONVENTION.items() if kind not in unnamed}


class NamedConstraints:
    """Mixed into a service's ``DeclarativeBase``: gives it a ``MetaData`` of its own with the convention."""

    unnamed: ClassVar[tuple[str, ...]] = ()
    # The column its tables are distributed by when sharded (``services.common.sharding``).
    tenant_column: ClassVar[str | None] = None

    def __init_subclass__(cls, **kw: Any) -> None:
        # Only the service's base itself (a direct subclass of DeclarativeBase) gets a MetaData; its tables
        # share it. Set before DeclarativeBase's own hook, which builds the registry from it.
        if DeclarativeBase in cls.__bases__ and "metadata" not in cls.__dict__:
            cls.metadata = MetaData(  # type: ignore[attr-defined]  # set before the registry exists
                naming_convention=naming_convention(cls.unnamed), info={SHARDING: cls.tenant_column}
            )
        super().__init_subclass__(**kw)


def table_of(model: type[Any]) -> Table:
    """A mapped class's ``Table``, for Core statements (SQLAlchemy types ``__table__`` as the wider ``FromClause``)."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model here maps one table
        raise TypeError(f"{model.__name__} is not mapped to one table")
    return table
