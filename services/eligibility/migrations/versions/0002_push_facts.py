"""The push facts: subscriptions, broadcasts, fan revisit rates (SPEC P1, P2).

Revision ID: 0002
Revises: 0001
Create Date: 2026-03-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 64


def _id(name: str) -> sa.Column:
    return sa.Column(name, sa.String(ID), nullable=False)


def _at(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "push_subscriptions",
        _id("store_id"),
        _id("consumer_id"),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "consumer_id", name="pk_push_subscriptions"),
    )
    op.create_index(
        "ix_push_subscriptions_store_subscribed", "push_subscriptions", ["store_id", "subscribed", "consumer_id"]
    )
    op.create_table(
        "broadcasts",
        _id("store_id"),
        _id("broadcast_id"),
        _at("published_at"),
        sa.PrimaryKeyConstraint("store_id", "broadcast_id", name="pk_broadcasts"),
    )
    op.create_index("ix_broadcasts_store_published_at", "broadcasts", ["store_id", "published_at"])
    op.create_table(
        "revisit_rates",
        _id("store_id"),
        _at("computed_at"),
        sa.Column("rate_bp", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "computed_at", name="pk_revisit_rates"),
    )


def downgrade() -> None:
    op.drop_table("revisit_rates")
    op.drop_index("ix_broadcasts_store_published_at", table_name="broadcasts")
    op.drop_table("broadcasts")
    op.drop_index("ix_push_subscriptions_store_subscribed", table_name="push_subscriptions")
    op.drop_table("push_subscriptions")
