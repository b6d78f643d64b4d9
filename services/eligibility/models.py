"""The eligibility service's tables (SQLAlchemy 2.x declarative).

Tables that grow with a store lead their primary key with the store's id
(orders, 微淘 levels, follows, crowds, blacklists), fan levels with the
streamer's and invitations with the inviter's; a consumer's platform-wide
facts are reference tables, read with any store's rows. Each table's
declaration says which (``services.common.sharding``, ADR 0014).
The schema itself is created by ``migrations/versions``, never ``create_all``.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Index, Integer, SmallInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.schema import NamedConstraints
from services.common.sharding import distributed_by, reference
from services.common.sqltypes import UtcDateTime

ID = 64  # services.common.validation.ID_PATTERN allows at most 64 characters


class Base(NamedConstraints, DeclarativeBase):
    """The eligibility database."""

    tenant_column = "store_id"


class AccountRow(Base):
    """An account and its role (SPEC §0, E1, E4, C8)."""

    __tablename__ = "accounts"
    __table_args__ = ({"info": reference("an account's role and store, read with whichever store it acts on")},)

    account_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[str] = mapped_column(String(ID), default="")
    broadcast_permitted: Mapped[bool] = mapped_column(Boolean, default=False)
    own_store_id: Mapped[str] = mapped_column(String(ID), default="")


class StoreRow(Base):
    """A store's platform, main account and status (SPEC E1, E2)."""

    __tablename__ = "stores"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    main_account_id: Mapped[str] = mapped_column(String(ID))
    operating_normally: Mapped[bool] = mapped_column(Boolean)


class PaidOrderRow(Base):
    """A paid order; an order belongs to one store, which leads its key (SPEC E2, C9)."""

    __tablename__ = "paid_orders"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    paid_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # E2: a store's orders in a time window, counted from the index alone.
        Index("ix_paid_orders_store_paid_at", "store_id", "paid_at"),
        # C9 spend: one consumer's spend with one store in a window, summed from the index alone.
        Index("ix_paid_orders_store_consumer_paid_at", "store_id", "consumer_id", "paid_at", "amount_fen"),
    )


class ContentLevelRow(Base):
    """The 微淘 level history of a store, one row per weekly update (SPEC E3)."""

    __tablename__ = "content_levels"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    level: Mapped[int] = mapped_column(SmallInteger)


class FollowRow(Base):
    """A consumer following (or no longer following) a store's content account (SPEC C9)."""

    __tablename__ = "follows"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    following: Mapped[bool] = mapped_column(Boolean)


class ConsumerRow(Base):
    """Per-consumer facts (SPEC C1, C2), and the row blacklist escalations lock (C6, C7).

    Unknown facts stay NULL: not verified, 淘气值 0.
    """

    __tablename__ = "consumers"
    __table_args__ = ({"info": reference("a consumer's platform-wide facts, read with any store's rows")},)

    consumer_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    real_name_verified: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    taoqi_score: Mapped[int | None] = mapped_column(Integer, nullable=True)


class MerchantBlacklistRow(Base):
    """One store's blacklist entry for a consumer (SPEC C5); the index by consumer serves C6's counts."""

    __tablename__ = "merchant_blacklist"
    __table_args__ = (Index("ix_merchant_blacklist_consumer", "consumer_id", "store_id"),)

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    listed: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PlatformBlacklistRow(Base):
    """The platform blacklist entry of a consumer and why it exists (SPEC C4, C6, C7)."""

    __tablename__ = "platform_blacklist"
    __table_args__ = ({"info": reference("the platform's list, read with any store's rows")},)

    consumer_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    listed: Mapped[bool] = mapped_column(Boolean)
    # domain.ListingSource: "reported", "C6" or "C7".
    source: Mapped[str] = mapped_column(String(16))
    # C6: distinct merchants; C7: blacklisted invitees — as counted when escalated.
    evidence: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class InvitationRow(Base):
    """Who invited whom, keyed by inviter for C7 counts (SPEC C7)."""

    __tablename__ = "invitations"

    inviter_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    invitee_id: Mapped[str] = mapped_column(String(ID), primary_key=True)

    __table_args__ = (
        # A newly blacklisted consumer's inviters.
        Index("ix_invitations_invitee_id", "invitee_id", "inviter_id"),
        {"info": distributed_by("inviter_id")},
    )


class CrowdMemberRow(Base):
    """Membership of a crowd segment a merchant built (SPEC C9 crowd)."""

    __tablename__ = "crowd_members"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    crowd_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    member: Mapped[bool] = mapped_column(Boolean)


class FanLevelRow(Base):
    """A consumer's fan level with a streamer, as ``domain.FanLevel`` values (SPEC C10)."""

    __tablename__ = "fan_levels"
    __table_args__ = ({"info": distributed_by("streamer_id")},)

    streamer_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    level: Mapped[int] = mapped_column(SmallInteger)


class PushSubscriptionRow(Base):
    """A consumer's push subscription to a store's content account (SPEC P1)."""

    __tablename__ = "push_subscriptions"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    subscribed: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        # P1: a store's subscribers, counted and streamed in consumer order from the index alone.
        Index("ix_push_subscriptions_store_subscribed", "store_id", "subscribed", "consumer_id"),
    )


class BroadcastRow(Base):
    """A broadcast the store's content account published (SPEC P2 tier 1)."""

    __tablename__ = "broadcasts"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    broadcast_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    published_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # P2: a store's broadcasts in a time window, counted from the index alone.
        Index("ix_broadcasts_store_published_at", "store_id", "published_at"),
    )


class RevisitRateRow(Base):
    """The fan revisit rate history of a store, one row per upstream computation (SPEC P2 tier 2)."""

    __tablename__ = "revisit_rates"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    rate_bp: Mapped[int] = mapped_column(Integer)


class OldCustomerRow(Base):
    """What a buyer adds to a store's old-customer fan count (SPEC P3), as last counted.

    ``spans`` are the runs of marketplace days on which the buyer is an old
    customer (``rules.old_customer_spans``, written ``first:end`` in ISO days,
    comma-separated); ``fan`` says whether they were counted. Kept so that
    when the buyer's orders or follow change, what they added can be taken
    back exactly.
    """

    __tablename__ = "old_customers"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    fan: Mapped[bool] = mapped_column(Boolean)
    spans: Mapped[str] = mapped_column(Text)


class OldFanChangeRow(Base):
    """How a store's old-customer fan count (SPEC P3) changes on a marketplace day.

    The count on a day is the sum of the changes on and before it, so reading
    it costs the store's days, never its orders.
    """

    __tablename__ = "old_fan_changes"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    delta: Mapped[int] = mapped_column(Integer)


class OldFanBasisRow(Base):
    """The P3 numbers and calendar the stored counts were made with; other numbers mean a recount."""

    __tablename__ = "old_fan_basis"
    __table_args__ = ({"info": reference("one row: the numbers every store's counts were made with")},)

    basis: Mapped[str] = mapped_column(String(ID), primary_key=True)
