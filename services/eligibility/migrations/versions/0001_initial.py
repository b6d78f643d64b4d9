"""The eligibility facts: accounts, stores, orders, 微淘 levels, follows, consumers,
blacklists, invitations, crowds and fan levels.

Revision ID: 0001
Revises:
Create Date: 2026-01-15
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 64


def _id(name: str, *, primary_key: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(ID), nullable=False, primary_key=primary_key)


def _at(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "accounts",
        _id("account_id"),
        sa.Column("role", sa.String(16), nullable=False),
        _id("store_id"),
        sa.Column("broadcast_permitted", sa.Boolean(), nullable=False),
        _id("own_store_id"),
        sa.PrimaryKeyConstraint("account_id", name="pk_accounts"),
    )
    op.create_table(
        "stores",
        _id("store_id"),
        sa.Column("platform", sa.String(16), nullable=False),
        _id("main_account_id"),
        sa.Column("operating_normally", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", name="pk_stores"),
    )
    op.create_table(
        "paid_orders",
        _id("store_id"),
        _id("order_id"),
        _id("consumer_id"),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        _at("paid_at"),
        sa.PrimaryKeyConstraint("store_id", "order_id", name="pk_paid_orders"),
    )
    op.create_index("ix_paid_orders_store_paid_at", "paid_orders", ["store_id", "paid_at"])
    op.create_index(
        "ix_paid_orders_store_consumer_paid_at", "paid_orders", ["store_id", "consumer_id", "paid_at", "amount_fen"]
    )
    op.create_table(
        "content_levels",
        _id("store_id"),
        _at("updated_at"),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "updated_at", name="pk_content_levels"),
    )
    op.create_table(
        "follows",
        _id("store_id"),
        _id("consumer_id"),
        sa.Column("following", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "consumer_id", name="pk_follows"),
    )
    op.create_table(
        "consumers",
        _id("consumer_id"),
        sa.Column("real_name_verified", sa.Boolean(), nullable=True),
        sa.Column("taoqi_score", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("consumer_id", name="pk_consumers"),
    )
    op.create_table(
        "merchant_blacklist",
        _id("consumer_id"),
        _id("store_id"),
        sa.Column("listed", sa.Boolean(), nullable=False),
        _at("changed_at"),
        sa.PrimaryKeyConstraint("consumer_id", "store_id", name="pk_merchant_blacklist"),
    )
    op.create_table(
        "platform_blacklist",
        _id("consumer_id"),
        sa.Column("listed", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("evidence", sa.Integer(), nullable=False),
        _at("changed_at"),
        sa.PrimaryKeyConstraint("consumer_id", name="pk_platform_blacklist"),
    )
    op.create_table(
        "invitations",
        _id("inviter_id"),
        _id("invitee_id"),
        sa.PrimaryKeyConstraint("inviter_id", "invitee_id", name="pk_invitations"),
    )
    op.create_index("ix_invitations_invitee_id", "invitations", ["invitee_id", "inviter_id"])
    op.create_table(
        "crowd_members",
        _id("store_id"),
        _id("crowd_id"),
        _id("consumer_id"),
        sa.Column("member", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "crowd_id", "consumer_id", name="pk_crowd_members"),
    )
    op.create_table(
        "fan_levels",
        _id("consumer_id"),
        _id("streamer_id"),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("consumer_id", "streamer_id", name="pk_fan_levels"),
    )


def downgrade() -> None:
    for table in (
        "fan_levels",
        "crowd_members",
        "invitations",
        "platform_blacklist",
        "merchant_blacklist",
        "consumers",
        "follows",
        "content_levels",
        "paid_orders",
        "stores",
        "accounts",
    ):
        op.drop_table(table)
