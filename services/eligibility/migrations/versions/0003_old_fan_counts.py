"""Old-customer fans counted as they change, by marketplace day (SPEC P3).

The tables start empty and without a basis; the service counts every store's
old-customer fans from its orders and follows when it first starts on them
(``services.eligibility.old_fans``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 64


def _id(name: str) -> sa.Column:
    return sa.Column(name, sa.String(ID), nullable=False)


def upgrade() -> None:
    op.create_table(
        "old_customers",
        _id("store_id"),
        _id("consumer_id"),
        sa.Column("fan", sa.Boolean(), nullable=False),
        sa.Column("spans", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "consumer_id", name="pk_old_customers"),
    )
    op.create_table(
        "old_fan_changes",
        _id("store_id"),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "day", name="pk_old_fan_changes"),
    )
    op.create_table("old_fan_basis", _id("basis"), sa.PrimaryKeyConstraint("basis", name="pk_old_fan_basis"))


def downgrade() -> None:
    op.drop_table("old_fan_basis")
    op.drop_table("old_fan_changes")
    op.drop_table("old_customers")
