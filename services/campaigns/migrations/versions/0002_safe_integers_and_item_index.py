"""No computed column holds an overflowed value (SPEC D2): CHECKs at a safe integer; activities by item (V3).

An item's stock, a purchase's money, a refund, an end card's units and a
store's end-card sequence are each computed by the service (in SQL or in
Python). Each gets a CHECK at ``SAFE_INTEGER`` (9·10^18, below 2^63 − 1 and
below 2^63, the REAL that an overflowing integer sum becomes on SQLite), so a
write that overflowed fails and its transaction leaves nothing behind.

Before this revision a restock past the largest int64 was written on SQLite as
a REAL, and the item could no longer be read. Such a stock is not a number of
units anyone can recover; it is set to the ceiling first (readable again, and
every further restock is refused with D2's STOCK_LIMIT), so the CHECK can be
added over existing rows.

The item page asks whether an item is in a group buy running now (V3):
``ix_activities_item`` (store, item, end) answers it without a scan.

Revision ID: 0002
Revises: 0001
Create Date: 2026-03-12
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept here as a literal: a migration must not change when the models' constant does. The names are final
# (``op.f``): the models' naming convention, which Alembic applies to a migration's names, must not prefix them.
SAFE_INTEGER = 9_000_000_000_000_000_000

# table → (constraint name, column, whether it must also not be negative)
CHECKS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "items": (("ck_items_stock_safe", "stock", False),),
    "purchases": (
        ("ck_purchases_total_safe", "total_fen", True),
        ("ck_purchases_cash_safe", "cash_red_packet_fen", True),
        ("ck_purchases_coupon_safe", "store_coupon_fen", True),
    ),
    "refunds": (("ck_refunds_amount_safe", "amount_fen", True),),
    "store_streams": (("ck_store_streams_last_seq_safe", "last_seq", False),),
    "end_cards": (("ck_end_cards_units_safe", "units_sold", True),),
}


def _condition(column: str, not_negative: bool) -> str:
    low = f"{column} >= 0 AND " if not_negative else ""
    return f"{low}{column} <= {SAFE_INTEGER}"


def upgrade() -> None:
    # A stock that overflowed (SQLite kept it as a REAL ≥ 2^63) is unreadable: it becomes the ceiling.
    op.execute(f"UPDATE items SET stock = {SAFE_INTEGER} WHERE stock > {SAFE_INTEGER}")
    for table, checks in CHECKS.items():
        # Batch mode: SQLite adds a CHECK by copying the table (its other constraints and indexes kept);
        # PostgreSQL by ALTER TABLE … ADD CONSTRAINT.
        with op.batch_alter_table(table) as batch:
            for name, column, not_negative in checks:
                batch.create_check_constraint(op.f(name), _condition(column, not_negative))
    op.create_index("ix_activities_item", "activities", ["store_id", "item_id", "ends_at"])


def downgrade() -> None:
    op.drop_index("ix_activities_item", table_name="activities")
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name, _column, _not_negative in checks:
                batch.drop_constraint(op.f(name), type_="check")
