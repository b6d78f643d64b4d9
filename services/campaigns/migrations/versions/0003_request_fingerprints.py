"""The request_id rule (docs/adr/0001-request-id-rule.md): each request id keeps the fingerprint of its request.

A repeated id with the same request answers as the first call did; with another request it is
ALREADY_EXISTS (REQUEST_ID_REUSED). Rows written before this revision have no fingerprint and are taken to
be the same request. Nullable columns only: the previous release keeps working on the new schema.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept here as literals: a migration must not change when the models do. A SHA-256 in hex.
FINGERPRINT_CHARS = 64
TABLES = ("restocks", "activities", "trumpets", "purchases", "claims")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("request_fingerprint", sa.String(FINGERPRINT_CHARS), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("request_fingerprint")
