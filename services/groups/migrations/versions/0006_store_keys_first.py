"""Ready to shard by store (ADR 0014): a job's settlements keyed by the store first.

The job's own read (the stores it settled for a period) keeps an index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from services.common.migrations import replace_primary_key

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# groups' primary keys keep the names PostgreSQL gave them (``models.Base.unnamed``).
KEY = "job_settlements_pkey"


def upgrade() -> None:
    replace_primary_key("job_settlements", KEY, ["store_id", "job", "period"])
    op.create_index("ix_job_settlements_period", "job_settlements", ["job", "period", "store_id"])


def downgrade() -> None:
    op.drop_index("ix_job_settlements_period", table_name="job_settlements")
    replace_primary_key("job_settlements", KEY, ["job", "period", "store_id"])
