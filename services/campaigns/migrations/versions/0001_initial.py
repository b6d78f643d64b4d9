"""Initial campaigns schema: items, restocks, activities, pools, wallets, claims, purchases,
refunds, end cards, trumpets, votes, check-ins.

Revision ID: 0001
Revises:
Create Date: 2026-03-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 64
KIND = 24
TITLE = 64


def _when(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]  # a migration's column, typed as Alembic wrote it
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("item_id", sa.String(ID), primary_key=True),
        sa.Column("platform", sa.String(8), nullable=False),
        sa.Column("sku_count", sa.Integer(), nullable=False),
        sa.Column("price_min_fen", sa.BigInteger(), nullable=False),
        sa.Column("price_max_fen", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.BigInteger(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.CheckConstraint("stock >= 0", name=op.f("ck_items_stock_not_negative")),
    )
    op.create_table(
        "restocks",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("request_id", sa.String(ID), primary_key=True),
        sa.Column("item_id", sa.String(ID), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "group_slots",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("group_set_id", sa.String(ID), primary_key=True),
        _when("created_at"),
    )
    op.create_table(
        "activities",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("activity_id", sa.String(ID), primary_key=True),
        sa.Column("group_set_id", sa.String(ID), nullable=False),
        sa.Column("kind", sa.String(KIND), nullable=False),
        sa.Column("title", sa.String(TITLE), nullable=False),
        _when("starts_at"),
        _when("ends_at"),
        _when("ended_at", nullable=True),
        sa.Column("created_by", sa.String(ID), nullable=False),
        _when("created_at"),
        sa.Column("request_id", sa.String(ID), nullable=True),
        sa.Column("item_id", sa.String(ID), nullable=True),
        sa.Column("price_fen", sa.BigInteger(), nullable=True),
        sa.Column("group_size", sa.Integer(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=True),
        sa.Column("end_card_posted", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("store_id", "request_id", name="uq_activities_store_request"),
    )
    op.create_index("ix_activities_group_window", "activities", ["store_id", "group_set_id", "ends_at"])
    op.create_index("ix_activities_listing", "activities", ["store_id", "created_at", "activity_id"])
    op.create_index("ix_activities_end_cards_due", "activities", ["end_card_posted", "ends_at"])
    op.create_table(
        "pools",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("pool_id", sa.String(ID), primary_key=True),
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(KIND), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("per_user_limit", sa.Integer(), nullable=False),
        _when("expires_at"),
        sa.Column("remainder_refunded", sa.Boolean(), nullable=False),
        sa.CheckConstraint("remaining >= 0", name=op.f("ck_pools_remaining_not_negative")),
    )
    op.create_index("ix_pools_activity", "pools", ["store_id", "activity_id", "seq"])
    op.create_table(
        "wallets",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("consumer_id", sa.String(ID), primary_key=True),
        _when("created_at"),
    )
    op.create_table(
        "claims",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("claim_id", sa.String(ID), primary_key=True),
        sa.Column("request_id", sa.String(ID), nullable=False),
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("pool_id", sa.String(ID), nullable=False),
        sa.Column("consumer_id", sa.String(ID), nullable=False),
        sa.Column("kind", sa.String(KIND), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        _when("expires_at"),
        sa.Column("used_purchase_id", sa.String(ID), nullable=True),
        _when("claimed_at"),
        _when("settled_at", nullable=True),
        sa.UniqueConstraint("store_id", "request_id", name="uq_claims_store_request"),
    )
    op.create_index("ix_claims_consumer", "claims", ["store_id", "consumer_id", "activity_id"])
    op.create_index("ix_claims_expiry", "claims", ["state", "expires_at"])
    op.create_table(
        "purchases",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("purchase_id", sa.String(ID), primary_key=True),
        sa.Column("request_id", sa.String(ID), nullable=False),
        sa.Column("consumer_id", sa.String(ID), nullable=False),
        sa.Column("item_id", sa.String(ID), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("flash_sale_id", sa.String(ID), nullable=True),
        sa.Column("unit_price_fen", sa.BigInteger(), nullable=False),
        sa.Column("cash_red_packet_fen", sa.BigInteger(), nullable=False),
        sa.Column("store_coupon_fen", sa.BigInteger(), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("cash_red_packet_ids", sa.JSON(), nullable=False),
        sa.Column("store_coupon_ids", sa.JSON(), nullable=False),
        sa.Column("price_records", sa.JSON(), nullable=False),
        _when("created_at"),
        _when("cancelled_at", nullable=True),
        sa.Column("cancel_request_id", sa.String(ID), nullable=True),
        sa.UniqueConstraint("store_id", "request_id", name="uq_purchases_store_request"),
    )
    op.create_index("ix_purchases_flash_sale", "purchases", ["store_id", "flash_sale_id"])
    op.create_index("ix_purchases_listing", "purchases", ["store_id", "created_at", "purchase_id"])
    op.create_table(
        "refunds",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("refund_id", sa.String(ID), primary_key=True),
        sa.Column("source", sa.String(KIND), nullable=False),
        sa.Column("source_id", sa.String(ID), nullable=False),
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        _when("created_at"),
        sa.UniqueConstraint("store_id", "source", "source_id", name="uq_refunds_store_source"),
    )
    op.create_index("ix_refunds_listing", "refunds", ["store_id", "created_at", "refund_id"])
    op.create_table(
        "store_streams",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "end_cards",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("group_set_id", sa.String(ID), nullable=False),
        sa.Column("title", sa.String(TITLE), nullable=False),
        sa.Column("item_id", sa.String(ID), nullable=False),
        sa.Column("units_sold", sa.BigInteger(), nullable=False),
        sa.Column("purchases", sa.Integer(), nullable=False),
        _when("ended_at"),
        _when("posted_at"),
        sa.UniqueConstraint("store_id", "activity_id", name="uq_end_cards_store_activity"),
    )
    op.create_index("ix_end_cards_group", "end_cards", ["store_id", "group_set_id", "seq"])
    op.create_table(
        "trumpets",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("trumpet_id", sa.String(ID), primary_key=True),
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("group_set_id", sa.String(ID), nullable=False),
        sa.Column("sub_group_id", sa.String(ID), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _when("display_starts_at"),
        sa.Column("created_by", sa.String(ID), nullable=False),
        sa.Column("request_id", sa.String(ID), nullable=True),
        _when("created_at"),
        sa.UniqueConstraint("store_id", "request_id", name="uq_trumpets_store_request"),
    )
    op.create_table(
        "votes",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("activity_id", sa.String(ID), primary_key=True),
        sa.Column("consumer_id", sa.String(ID), primary_key=True),
        sa.Column("option_index", sa.Integer(), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "check_ins",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("activity_id", sa.String(ID), primary_key=True),
        sa.Column("consumer_id", sa.String(ID), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        _when("created_at"),
    )


def downgrade() -> None:
    for table in ("check_ins", "votes", "trumpets"):
        op.drop_table(table)
    op.drop_index("ix_end_cards_group", table_name="end_cards")
    op.drop_table("end_cards")
    op.drop_table("store_streams")
    op.drop_index("ix_refunds_listing", table_name="refunds")
    op.drop_table("refunds")
    op.drop_index("ix_purchases_listing", table_name="purchases")
    op.drop_index("ix_purchases_flash_sale", table_name="purchases")
    op.drop_table("purchases")
    op.drop_index("ix_claims_expiry", table_name="claims")
    op.drop_index("ix_claims_consumer", table_name="claims")
    op.drop_table("claims")
    op.drop_table("wallets")
    op.drop_index("ix_pools_activity", table_name="pools")
    op.drop_table("pools")
    op.drop_index("ix_activities_end_cards_due", table_name="activities")
    op.drop_index("ix_activities_listing", table_name="activities")
    op.drop_index("ix_activities_group_window", table_name="activities")
    op.drop_table("activities")
    op.drop_table("group_slots")
    op.drop_table("restocks")
    op.drop_table("items")
