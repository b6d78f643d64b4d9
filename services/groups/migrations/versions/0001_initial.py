"""Initial groups schema: capacity owners, group-sets, sub-groups, memberships, admins, levels.

Revision ID: 0001
Revises:
Create Date: 2026-01-15
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
KEY = 80
SUB_GROUP_NAME = 80


def upgrade() -> None:
    op.create_table(
        "capacity_owners",
        sa.Column("owner_key", sa.String(KEY), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("group_set_count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "group_sets",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("owner_key", sa.String(KEY), sa.ForeignKey("capacity_owners.owner_key"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner_account_id", sa.String(ID), nullable=False),
        sa.Column("store_id", sa.String(ID), nullable=True),
        sa.Column("streamer_id", sa.String(ID), nullable=True),
        sa.Column("threshold_kind", sa.String(16), nullable=False),
        sa.Column("threshold_params", sa.JSON(), nullable=False),
        sa.Column("password_digest", sa.String(255), nullable=False),
        sa.Column("threshold_version", sa.BigInteger(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("announcement", sa.Text(), nullable=False),
        sa.Column("newcomer_reply", sa.Text(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("sub_group_count", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(ID), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dissolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("owner_account_id", "request_id", name="uq_group_sets_owner_request"),
    )
    op.create_index("ix_group_sets_owner_listing", "group_sets", ["owner_key", "created_at", "id"])
    op.create_table(
        "sub_groups",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("group_set_id", sa.String(ID), sa.ForeignKey("group_sets.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(SUB_GROUP_NAME), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("group_set_id", "seq", name="uq_sub_groups_set_seq"),
    )
    op.create_table(
        "memberships",
        sa.Column("group_set_id", sa.String(ID), sa.ForeignKey("group_sets.id"), primary_key=True),
        sa.Column("consumer_id", sa.String(ID), primary_key=True),
        sa.Column("sub_group_id", sa.String(ID), sa.ForeignKey("sub_groups.id"), nullable=False),
        sa.Column("request_id", sa.String(ID), nullable=True),
        sa.Column("newcomer_reply", sa.Text(), nullable=False),
        sa.Column("messages_hidden", sa.Boolean(), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_memberships_consumer", "memberships", ["consumer_id", "group_set_id"])
    op.create_table(
        "first_joins",
        sa.Column("group_set_id", sa.String(ID), sa.ForeignKey("group_sets.id"), primary_key=True),
        sa.Column("consumer_id", sa.String(ID), primary_key=True),
        sa.Column("first_joined_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "join_requests",
        sa.Column("group_set_id", sa.String(ID), sa.ForeignKey("group_sets.id"), primary_key=True),
        sa.Column("consumer_id", sa.String(ID), primary_key=True),
        sa.Column("request_id", sa.String(ID), primary_key=True),
        sa.Column("sub_group_id", sa.String(ID), nullable=False),
        sa.Column("sub_group_name", sa.String(SUB_GROUP_NAME), nullable=False),
        sa.Column("newcomer_reply", sa.Text(), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "admins",
        sa.Column("group_set_id", sa.String(ID), sa.ForeignKey("group_sets.id"), primary_key=True),
        sa.Column("account_id", sa.String(ID), primary_key=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "group_levels",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("group_levels")
    op.drop_table("admins")
    op.drop_table("join_requests")
    op.drop_table("first_joins")
    op.drop_index("ix_memberships_consumer", table_name="memberships")
    op.drop_table("memberships")
    op.drop_table("sub_groups")
    op.drop_index("ix_group_sets_owner_listing", table_name="group_sets")
    op.drop_table("group_sets")
    op.drop_table("capacity_owners")
