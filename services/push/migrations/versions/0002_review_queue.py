"""Ops' review queue (SPEC P8): partial indexes on pending pushes, oldest submission first.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING_WHERE = "state = 'pending_review'"


def upgrade() -> None:
    op.create_index(
        "ix_pushes_pending",
        "pushes",
        ["submitted_at", "push_id"],
        postgresql_where=sa.text(PENDING_WHERE),
        sqlite_where=sa.text(PENDING_WHERE),
    )
    op.create_index(
        "ix_pushes_pending_store",
        "pushes",
        ["store_id", "submitted_at", "push_id"],
        postgresql_where=sa.text(PENDING_WHERE),
        sqlite_where=sa.text(PENDING_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_pushes_pending_store", table_name="pushes")
    op.drop_index("ix_pushes_pending", table_name="pushes")
