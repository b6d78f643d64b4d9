"""Groups over time: daily counts, monthly metrics, expansion grants, job runs,
sleeping-customer plans and member activity, the audit trail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 64
KEY = 80


def upgrade() -> None:
    with op.batch_alter_table("capacity_owners") as batch:
        batch.add_column(sa.Column("extra_members", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "daily_member_counts",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("members", sa.Integer(), nullable=False),
    )
    op.create_table(
        "monthly_metrics",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("open_rate_bp", sa.Integer(), nullable=False),
        sa.Column("revisit_7d_bp", sa.Integer(), nullable=False),
        sa.Column("conversion_bp", sa.Integer(), nullable=False),
        sa.Column("merchant_messages", sa.Integer(), nullable=False),
    )
    op.create_table(
        "capacity_grants",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "job_runs",
        sa.Column("job", sa.String(32), primary_key=True),
        sa.Column("period", sa.String(16), primary_key=True),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sleeping_plans",
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("inactivity_days", sa.Integer(), nullable=False),
    )
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("owner_key", sa.String(KEY), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(ID), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(KEY), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=False),
        sa.Column("new_value", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_owner", "audit_entries", ["owner_key", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_owner", "audit_entries")
    for table in (
        "audit_entries",
        "sleeping_plans",
        "job_runs",
        "capacity_grants",
        "monthly_metrics",
        "daily_member_counts",
    ):
        op.drop_table(table)
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("notified_at")
        batch.drop_column("last_active_at")
    with op.batch_alter_table("capacity_owners") as batch:
        batch.drop_column("extra_members")
