"""Each service's declarative base: a MetaData of its own, named by the one convention."""

from __future__ import annotations

import pytest
from sqlalchemy import CheckConstraint, Column, Integer, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase

from services.common.schema import NAMING_CONVENTION, NamedConstraints, naming_convention


class One(NamedConstraints, DeclarativeBase):
    pass


class Other(NamedConstraints, DeclarativeBase):
    unnamed = ("pk", "fk")


class Row(One):
    __tablename__ = "rows"
    __table_args__ = (CheckConstraint("n >= 0", name="n_not_negative"), UniqueConstraint("n"))
    id = Column(Integer, primary_key=True)
    n = Column(Integer)


def test_every_base_has_its_own_metadata_and_the_convention() -> None:
    assert One.metadata is not Other.metadata and set(One.metadata.tables) == {"rows"}
    assert NAMING_CONVENTION.items() <= dict(One.metadata.naming_convention).items()
    assert "pk" not in Other.metadata.naming_convention and "fk" not in Other.metadata.naming_convention
    names = {str(c.name) for c in Row.__table__.constraints}
    assert names == {"pk_rows", "ck_rows_n_not_negative", "uq_rows_n"}


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        naming_convention(("px",))
