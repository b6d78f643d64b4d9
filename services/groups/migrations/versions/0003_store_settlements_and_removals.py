"""Jobs settle store by store (SPEC D3): job_settlements replaces the per-period job_runs;
members removed by the owner, an admin, a store blacklist or the sleeping plan (R5, C15).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 64


def upgrade() -> None:
    op.create_table(
        "job_settlements",
        sa.Column("job", sa.String(32), primary_key=True),
        sa.Column("period", sa.String(16), primary_key=True),
        sa.Column("store_id", sa.String(ID), primary_key=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),
    )
    # A month the old job ran counts as settled for every store it set the next month's level for.
    bind = op.get_bind()
    runs = bind.execute(sa.text("SELECT period, ran_at FROM job_runs WHERE job = 'levels'")).all()
    for period, ran_at in runs:
        year, month = (int(part) for part in period.split("-"))
        following = f"{year + month // 12:04d}-{month % 12 + 1:02d}"
        bind.execute(
            sa.text(
                "INSERT INTO job_settlements (job, period, store_id, settled_at) "
                "SELECT 'levels', :period, store_id, :ran_at FROM group_levels WHERE month = :following"
            ),
            {"period": period, "ran_at": ran_at, "following": following},
        )
    op.drop_table("job_runs")
    op.create_table(
        "removals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("consumer_id", sa.String(ID), nullable=False),
        sa.Column("group_set_id", sa.String(ID), sa.ForeignKey("group_sets.id"), nullable=False),
        sa.Column("cause", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("barred", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(ID), nullable=False),
        sa.Column("request_id", sa.String(ID), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("group_set_id", "consumer_id", "request_id", name="uq_removals_request"),
    )
    op.create_index("ix_removals_consumer", "removals", ["consumer_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_removals_consumer", "removals")
    op.drop_table("removals")
    op.create_table(
        "job_runs",
        sa.Column("job", sa.String(32), primary_key=True),
        sa.Column("period", sa.String(16), primary_key=True),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        "INSERT INTO job_runs (job, period, ran_at) "
        "SELECT job, period, MIN(settled_at) FROM job_settlements GROUP BY job, period"
    )
    op.drop_table("job_settlements")
