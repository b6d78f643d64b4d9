"""The push schema: accounts, pushes, audiences, recall slots, grants, notices, the delivery ledger.

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
STATE = 16
TITLE = 64
DUE_WHERE = "state IN ('approved', 'sending')"
DRAFT_WHERE = "state IN ('draft', 'discarded')"


def _id(name: str) -> sa.Column:
    return sa.Column(name, sa.String(ID), nullable=False)


def _at(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "push_accounts",
        _id("store_id"),
        _at("created_at"),
        sa.PrimaryKeyConstraint("store_id", name="pk_push_accounts"),
    )
    op.create_table(
        "pushes",
        _id("store_id"),
        _id("push_id"),
        sa.Column("kind", sa.String(STATE), nullable=False),
        sa.Column("state", sa.String(STATE), nullable=False),
        sa.Column("title", sa.String(TITLE), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _id("account_id"),
        sa.Column("grant_id", sa.String(ID), nullable=True),
        sa.Column("request_id", sa.String(ID), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("audience_limit", sa.BigInteger(), nullable=False),
        sa.Column("audience_size", sa.BigInteger(), nullable=False),
        sa.Column("quota_year", sa.Integer(), nullable=True),
        sa.Column("quota_returned", sa.Boolean(), nullable=False),
        _at("created_at"),
        _at("submitted_at", nullable=True),
        sa.Column("reviewed_by", sa.String(ID), nullable=True),
        _at("reviewed_at", nullable=True),
        sa.Column("review_note", sa.Text(), nullable=False),
        _at("send_at", nullable=True),
        _at("cancelled_at", nullable=True),
        _at("sent_at", nullable=True),
        sa.Column("delivered_count", sa.BigInteger(), nullable=False),
        sa.Column("dispatch_cursor", sa.String(ID), nullable=True),
        sa.PrimaryKeyConstraint("store_id", "push_id", name="pk_pushes"),
        sa.UniqueConstraint("store_id", "request_id", name="uq_pushes_store_request"),
    )
    op.create_index("ix_pushes_push_id", "pushes", ["push_id"])
    op.create_index("ix_pushes_store_kind_submitted", "pushes", ["store_id", "kind", "submitted_at"])
    op.create_index("ix_pushes_store_submitted", "pushes", ["store_id", "submitted_at", "push_id"])
    op.create_index(
        "ix_pushes_due", "pushes", ["send_at"], postgresql_where=sa.text(DUE_WHERE), sqlite_where=sa.text(DUE_WHERE)
    )
    op.create_index(
        "ix_pushes_drafts",
        "pushes",
        ["created_at"],
        postgresql_where=sa.text(DRAFT_WHERE),
        sqlite_where=sa.text(DRAFT_WHERE),
    )
    op.create_table(
        "push_audience",
        _id("store_id"),
        _id("push_id"),
        _id("recipient_id"),
        sa.PrimaryKeyConstraint("store_id", "push_id", "recipient_id", name="pk_push_audience"),
    )
    op.create_table(
        "recall_slots",
        _id("store_id"),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(STATE), nullable=False),
        _id("push_id"),
        _at("spent_at"),
        sa.PrimaryKeyConstraint("store_id", "year", "kind", name="pk_recall_slots"),
    )
    op.create_table(
        "grants",
        _id("store_id"),
        _id("grant_id"),
        sa.Column("audience_size", sa.BigInteger(), nullable=False),
        sa.Column("activity", sa.String(TITLE), nullable=False),
        _id("granted_by"),
        _at("granted_at"),
        sa.Column("request_id", sa.String(ID), nullable=True),
        sa.Column("push_id", sa.String(ID), nullable=True),
        sa.PrimaryKeyConstraint("store_id", "grant_id", name="pk_grants"),
        sa.UniqueConstraint("store_id", "request_id", name="uq_grants_store_request"),
    )
    op.create_table(
        "notices",
        _id("store_id"),
        _id("notice_id"),
        sa.Column("kind", sa.String(STATE), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("store_id", "notice_id", name="pk_notices"),
        sa.UniqueConstraint("store_id", "year", "kind", name="uq_notices_store_year_kind"),
    )
    op.create_index("ix_notices_store_created", "notices", ["store_id", "created_at", "notice_id"])
    op.create_table(
        "deliveries",
        _id("store_id"),
        _id("push_id"),
        _id("recipient_id"),
        _at("written_at"),
        sa.PrimaryKeyConstraint("store_id", "push_id", "recipient_id", name="pk_deliveries"),
    )
    op.create_table(
        "delivery_batches",
        _id("store_id"),
        _id("push_id"),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        _id("after_recipient"),
        _id("last_recipient"),
        sa.Column("size", sa.Integer(), nullable=False),
        _at("written_at"),
        sa.PrimaryKeyConstraint("store_id", "push_id", "ledger_seq", name="pk_delivery_batches"),
    )
    op.create_index("ix_delivery_batches_ledger_seq", "delivery_batches", ["ledger_seq"], unique=True)
    ledger_head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_head"),
    )
    op.bulk_insert(ledger_head, [{"id": 1, "last_seq": 0}])


def downgrade() -> None:
    for table in (
        "ledger_head",
        "delivery_batches",
        "deliveries",
        "notices",
        "grants",
        "recall_slots",
        "push_audience",
        "pushes",
        "push_accounts",
    ):
        op.drop_table(table)
