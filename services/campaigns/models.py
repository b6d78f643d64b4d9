"""The campaigns database: items, activities, pools, claims, purchases, refunds, end cards.

Every table that grows is keyed by the store first and no unit of work
touches two stores, so the data can be distributed by store later (DESIGN
"Past one database"). The guards are in the schema too: stock and prizes
left cannot go below zero (CHECK), a request id is used once per store
(UNIQUE), a packet or pool is refunded at most once and an activity gets at
most one end card (UNIQUE). The schema is created by the Alembic history in
``migrations/``.

No column the service computes into can hold an overflowed value (SPEC D2):
each has a CHECK at ``SAFE_INTEGER``, below the largest int64 and below the
float that an overflowing integer sum becomes on SQLite (2^63 as a REAL), so a
write that overflowed (or would) fails and its transaction leaves nothing
behind, and no row ever stops being readable. The service's own bounds
(``[bounds]``) keep far below these ceilings; they are the database's last guard.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.request_ids import FINGERPRINT_CHARS
from services.common.schema import NamedConstraints
from services.common.sqltypes import UtcDateTime

ID_CHARS = 64  # validation.ID_PATTERN allows at most 64
# The largest value a computed column may hold (D2): under 2^63 - 1 with room, so every overflow fails the CHECK.
SAFE_INTEGER = 9_000_000_000_000_000_000
# An item's stock may pass ``bounds.stock`` only by cancellations giving units back, and never this.
STOCK_CEILING = SAFE_INTEGER
KIND_CHARS = 24
TITLE_CHARS = 64
DAY_CHARS = 10  # YYYY-MM-DD


class Base(NamedConstraints, DeclarativeBase):
    """The campaigns database. Its primary keys predate the naming convention and keep PostgreSQL's names."""

    tenant_column = "store_id"

    unnamed = ("pk",)


def at_most_safe(column: str, name: str, *, not_negative: bool = False) -> CheckConstraint:
    """A CHECK that ``column`` is at most ``SAFE_INTEGER`` (and not negative): no overflowed value is kept.

    ``name`` is the constraint's suffix: the convention makes it ``ck_<table>_<name>``.
    """
    low = f"{column} >= 0 AND " if not_negative else ""
    return CheckConstraint(f"{low}{column} <= {SAFE_INTEGER}", name=name)


class Item(Base):
    """An item's facts and its one stock (M2): every sale draws on ``stock``."""

    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        at_most_safe("stock", "stock_safe"),
    )

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    platform: Mapped[str] = mapped_column(String(8))
    sku_count: Mapped[int] = mapped_column(Integer)
    price_min_fen: Mapped[int] = mapped_column(BigInteger)
    price_max_fen: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Restock(Base):
    """One restock per request id: a retried restock adds nothing."""

    __tablename__ = "restocks"

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    # The request's fingerprint (services.common.request_ids): a reused id with another request is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_CHARS), nullable=True)
    item_id: Mapped[str] = mapped_column(String(ID_CHARS))
    quantity: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class GroupSlot(Base):
    """The row an activity creation locks (M11): one per group-set that ever had an activity."""

    __tablename__ = "group_slots"

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Activity(Base):
    __tablename__ = "activities"
    __table_args__ = (
        UniqueConstraint("store_id", "request_id", name="uq_activities_store_request"),
        Index("ix_activities_group_window", "store_id", "group_set_id", "ends_at"),
        Index("ix_activities_listing", "store_id", "created_at", "activity_id"),
        Index("ix_activities_end_cards_due", "end_card_posted", "ends_at"),
        Index("ix_activities_item", "store_id", "item_id", "ends_at"),  # V3: is the item in a group buy now
    )

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS))
    kind: Mapped[str] = mapped_column(String(KIND_CHARS))
    title: Mapped[str] = mapped_column(String(TITLE_CHARS))
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(String(ID_CHARS))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    request_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    # The request's fingerprint (services.common.request_ids): a reused id with another request is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_CHARS), nullable=True)
    item_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    price_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    group_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    options: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    end_card_posted: Mapped[bool] = mapped_column(Boolean, default=False)


class Pool(Base):
    """A prize pool of a fountain or lucky red packet (M7); ``remaining`` never below zero."""

    __tablename__ = "pools"
    __table_args__ = (
        CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        Index("ix_pools_activity", "store_id", "activity_id", "seq"),
    )

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    pool_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(ID_CHARS))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(KIND_CHARS))
    value_fen: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    per_user_limit: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    remainder_refunded: Mapped[bool] = mapped_column(Boolean, default=False)


class Wallet(Base):
    """The row a claim locks (M10): one per consumer of a store, serialising their claims."""

    __tablename__ = "wallets"

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Claim(Base):
    """A prize a consumer claimed: held in the wallet until used, refunded (cash, M9) or expired."""

    __tablename__ = "claims"
    __table_args__ = (
        UniqueConstraint("store_id", "request_id", name="uq_claims_store_request"),
        Index("ix_claims_consumer", "store_id", "consumer_id", "activity_id"),
        Index("ix_claims_expiry", "state", "expires_at"),
    )

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    claim_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(ID_CHARS))
    # The request's fingerprint (services.common.request_ids): a reused id with another request is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_CHARS), nullable=True)
    activity_id: Mapped[str] = mapped_column(String(ID_CHARS))
    pool_id: Mapped[str] = mapped_column(String(ID_CHARS))
    consumer_id: Mapped[str] = mapped_column(String(ID_CHARS))
    kind: Mapped[str] = mapped_column(String(KIND_CHARS))
    value_fen: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(12))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_purchase_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Purchase(Base):
    """One sale: written in the same transaction that took its stock (M2)."""

    __tablename__ = "purchases"
    __table_args__ = (
        UniqueConstraint("store_id", "request_id", name="uq_purchases_store_request"),
        at_most_safe("total_fen", "total_safe", not_negative=True),
        at_most_safe("cash_red_packet_fen", "cash_safe", not_negative=True),
        at_most_safe("store_coupon_fen", "coupon_safe", not_negative=True),
        Index("ix_purchases_flash_sale", "store_id", "flash_sale_id"),
        Index("ix_purchases_listing", "store_id", "created_at", "purchase_id"),
    )

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    purchase_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(ID_CHARS))
    # The request's fingerprint (services.common.request_ids): a reused id with another request is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_CHARS), nullable=True)
    consumer_id: Mapped[str] = mapped_column(String(ID_CHARS))
    item_id: Mapped[str] = mapped_column(String(ID_CHARS))
    quantity: Mapped[int] = mapped_column(BigInteger)
    flash_sale_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    unit_price_fen: Mapped[int] = mapped_column(BigInteger)
    cash_red_packet_fen: Mapped[int] = mapped_column(BigInteger)
    store_coupon_fen: Mapped[int] = mapped_column(BigInteger)
    total_fen: Mapped[int] = mapped_column(BigInteger)
    cash_red_packet_ids: Mapped[list[str]] = mapped_column(JSON)
    store_coupon_ids: Mapped[list[str]] = mapped_column(JSON)
    # M3: [[record, counts], ...] for flash-sale sales, [] otherwise.
    price_records: Mapped[list[list[Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    cancel_request_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)


class Refund(Base):
    """The refund ledger (M9): cash back to the merchant, once per packet or pool."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("store_id", "source", "source_id", name="uq_refunds_store_source"),
        at_most_safe("amount_fen", "amount_safe", not_negative=True),
        Index("ix_refunds_listing", "store_id", "created_at", "refund_id"),
    )

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    refund_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    source: Mapped[str] = mapped_column(String(KIND_CHARS))
    source_id: Mapped[str] = mapped_column(String(ID_CHARS))
    activity_id: Mapped[str] = mapped_column(String(ID_CHARS))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StoreStream(Base):
    """A store's end-card sequence; locked while a card is posted, so cards commit in seq order."""

    __tablename__ = "store_streams"
    __table_args__ = (at_most_safe("last_seq", "last_seq_safe"),)

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class EndCard(Base):
    """M6: posted once per flash sale when it ends."""

    __tablename__ = "end_cards"
    __table_args__ = (
        UniqueConstraint("store_id", "activity_id", name="uq_end_cards_store_activity"),
        at_most_safe("units_sold", "units_safe", not_negative=True),
        Index("ix_end_cards_group", "store_id", "group_set_id", "seq"),
    )

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    activity_id: Mapped[str] = mapped_column(String(ID_CHARS))
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS))
    title: Mapped[str] = mapped_column(String(TITLE_CHARS))
    item_id: Mapped[str] = mapped_column(String(ID_CHARS))
    units_sold: Mapped[int] = mapped_column(BigInteger)
    purchases: Mapped[int] = mapped_column(Integer)
    ended_at: Mapped[datetime] = mapped_column(UtcDateTime())
    posted_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Trumpet(Base):
    """M12: a trumpet on a sub-group announcing an activity."""

    __tablename__ = "trumpets"
    __table_args__ = (UniqueConstraint("store_id", "request_id", name="uq_trumpets_store_request"),)

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    trumpet_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(ID_CHARS))
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS))
    sub_group_id: Mapped[str] = mapped_column(String(ID_CHARS))
    message: Mapped[str] = mapped_column(Text)
    display_starts_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(ID_CHARS))
    request_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    # The request's fingerprint (services.common.request_ids): a reused id with another request is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_CHARS), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Vote(Base):
    """One vote per consumer per voting activity (M13)."""

    __tablename__ = "votes"

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    option_index: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class CheckIn(Base):
    """One check-in per consumer per market day per check-in activity (M13)."""

    __tablename__ = "check_ins"

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    day: Mapped[str] = mapped_column(String(DAY_CHARS), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
