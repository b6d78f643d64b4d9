"""Ready to shard by store (ADR 0014): the two keys that did not lead with their tenant.

A store's blacklist is keyed by the store first, with an index by consumer
for C6's count of the merchants who listed one consumer; a streamer's fan
levels by the streamer first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

from services.common.migrations import replace_primary_key

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    replace_primary_key("merchant_blacklist", "pk_merchant_blacklist", ["store_id", "consumer_id"])
    op.create_index("ix_merchant_blacklist_consumer", "merchant_blacklist", ["consumer_id", "store_id"])
    replace_primary_key("fan_levels", "pk_fan_levels", ["streamer_id", "consumer_id"])


def downgrade() -> None:
    replace_primary_key("fan_levels", "pk_fan_levels", ["consumer_id", "streamer_id"])
    op.drop_index("ix_merchant_blacklist_consumer", table_name="merchant_blacklist")
    replace_primary_key("merchant_blacklist", "pk_merchant_blacklist", ["consumer_id", "store_id"])
