"""The groups database: group-sets, sub-groups, memberships, admins, levels.

Counters live on the rows that are locked for a join (the capacity owner and
the group-set, SPEC T6), so a join never counts a store's members. Every
table that grows leads its key with the owner (``owner_key``: a store's id,
or ``streamer/<id>``; the store tables' ``store_id`` is the same value), so
a sharded database keeps one owner's rows on one node (ADR 0014); a set's
owner is found by its id in the reference table ``group_set_owners``.
The schema itself is created by the Alembic history in ``migrations/``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.request_ids import FINGERPRINT_CHARS
from services.common.schema import NamedConstraints
from services.common.sharding import distributed_by, reference
from services.common.sqltypes import UtcDateTime

ID_CHARS = 64  # validation.ID_PATTERN allows at most 64
KEY_CHARS = 80  # "streamer/" + an id
NAME_CHARS = 64
SUB_GROUP_NAME_CHARS = 80  # a group-set name plus its sequence number (T5)


# Tables of stores only, keyed by the store's id (ADR 0014: a store's owner key will be its id).
STORE_ONLY = distributed_by("store_id")


class Base(NamedConstraints, DeclarativeBase):
    """The groups database, distributed by owner (ADR 0014)."""

    tenant_column = "owner_key"


class CapacityOwner(Base):
    """A store (its id) or a streamer (``streamer/<id>``): the lock and counters of T2/T4."""

    __tablename__ = "capacity_owners"

    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    group_set_count: Mapped[int] = mapped_column(Integer, default=0)
    # Members granted by expansion applications (T3); stores only.
    extra_members: Mapped[int] = mapped_column(Integer, default=0)


class GroupSetOwner(Base):
    """Which owner a group-set belongs to: a reference table, so a call naming only the set finds its owner on
    any node."""

    __tablename__ = "group_set_owners"
    __table_args__ = ({"info": reference("one row per group-set, written once; read first by set-only calls")},)

    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS))


class GroupSet(Base):
    __tablename__ = "group_sets"
    __table_args__ = (
        UniqueConstraint("owner_key", "owner_account_id", "request_id", name="uq_group_sets_owner_request"),
        Index("ix_group_sets_owner_listing", "owner_key", "created_at", "id"),
    )

    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS), ForeignKey("capacity_owners.owner_key"), primary_key=True)
    id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(NAME_CHARS))
    owner_account_id: Mapped[str] = mapped_column(String(ID_CHARS))
    store_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    streamer_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    threshold_kind: Mapped[str] = mapped_column(String(16))
    threshold_params: Mapped[dict[str, Any]] = mapped_column(JSON)
    password_digest: Mapped[str] = mapped_column(String(255), default="")
    threshold_version: Mapped[int] = mapped_column(BigInteger, default=1)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    announcement: Mapped[str] = mapped_column(Text, default="")
    newcomer_reply: Mapped[str] = mapped_column(Text, default="")
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    sub_group_count: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    # The request's fingerprint (services.common.request_ids): a reused id with another request is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_CHARS), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    dissolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


def _in_set() -> ForeignKeyConstraint:
    """A row of one group-set: its owner and set refer to the set's key, so both live on the owner's node."""
    return ForeignKeyConstraint(["owner_key", "group_set_id"], ["group_sets.owner_key", "group_sets.id"])


class SubGroup(Base):
    __tablename__ = "sub_groups"
    __table_args__ = (
        UniqueConstraint("owner_key", "group_set_id", "seq", name="uq_sub_groups_set_seq"),
        _in_set(),
    )

    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS), primary_key=True)
    id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS))
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(SUB_GROUP_NAME_CHARS))
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Membership(Base):
    """One consumer in one sub-group; the primary key is SPEC C13's last guard."""

    __tablename__ = "memberships"
    __table_args__ = (
        Index("ix_memberships_consumer", "consumer_id", "group_set_id"),
        _in_set(),
        ForeignKeyConstraint(["owner_key", "sub_group_id"], ["sub_groups.owner_key", "sub_groups.id"]),
    )

    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS), primary_key=True)
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    sub_group_id: Mapped[str] = mapped_column(String(ID_CHARS))
    request_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    newcomer_reply: Mapped[str] = mapped_column(Text, default="")
    messages_hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    joined_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # C15/X5: the member's last activity as reported, and when they were given notice.
    last_active_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class FirstJoin(Base):
    """A consumer ever joined this group-set: the newcomer auto-reply is shown once (R3)."""

    __tablename__ = "first_joins"
    __table_args__ = (_in_set(),)

    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS), primary_key=True)
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    first_joined_at: Mapped[datetime] = mapped_column(UtcDateTime())


class JoinRequest(Base):
    """The first answer to an AddMember request id, replayed even after the member left."""

    __tablename__ = "join_requests"
    __table_args__ = (_in_set(),)

    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS), primary_key=True)
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    sub_group_id: Mapped[str] = mapped_column(String(ID_CHARS))
    sub_group_name: Mapped[str] = mapped_column(String(SUB_GROUP_NAME_CHARS))
    newcomer_reply: Mapped[str] = mapped_column(Text, default="")
    joined_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Admin(Base):
    """A super admin of a group-set (R2)."""

    __tablename__ = "admins"
    __table_args__ = (_in_set(),)

    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS), primary_key=True)
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime())


class GroupLevel(Base):
    """A store's group level for one month, kept as history (T2, T8)."""

    __tablename__ = "group_levels"
    __table_args__ = ({"info": STORE_ONLY},)

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "YYYY-MM"
    level: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DailyMemberCount(Base):
    """A store's members at the end of one day; T7 averages them over a month."""

    __tablename__ = "daily_member_counts"
    __table_args__ = ({"info": STORE_ONLY},)

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # "YYYY-MM-DD"
    members: Mapped[int] = mapped_column(Integer)


class MonthlyMetrics(Base):
    """The month's group performance figures upstream systems report (T8)."""

    __tablename__ = "monthly_metrics"
    __table_args__ = ({"info": STORE_ONLY},)

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    open_rate_bp: Mapped[int] = mapped_column(Integer)
    revisit_7d_bp: Mapped[int] = mapped_column(Integer)
    conversion_bp: Mapped[int] = mapped_column(Integer)
    merchant_messages: Mapped[int] = mapped_column(Integer)


class CapacityGrant(Base):
    """One granted large-group expansion application (T3)."""

    __tablename__ = "capacity_grants"
    __table_args__ = ({"info": STORE_ONLY},)

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    members: Mapped[int] = mapped_column(Integer)
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime())


class JobSettlement(Base):
    """One store settled by a scheduled job for one period (a month's level, SPEC T8, D3).

    Inserted in the transaction that settles the store, so the key makes one
    replica settle it once, and a store whose settlement failed has no row and
    is tried again. Daily counts need none: their own key is the claim (T7).
    """

    __tablename__ = "job_settlements"
    # The stores a job settled for a period, read by the job as it resumes.
    __table_args__ = (Index("ix_job_settlements_period", "job", "period", "store_id"), {"info": STORE_ONLY})

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    job: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    settled_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SleepingPlan(Base):
    """A store's sleeping-customer plan (C15): on or off, and its inactivity window."""

    __tablename__ = "sleeping_plans"
    __table_args__ = ({"info": STORE_ONLY},)

    store_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    inactivity_days: Mapped[int] = mapped_column(Integer)


class AuditEntry(Base):
    """Who changed what, when, old → new (X4); read per store or streamer, in the order of ``id``.

    ``id`` is minted in time order (``services.common.ids.ordered_id``): the key leads with the owner, and
    SQLite numbers only a key of one column.
    """

    __tablename__ = "audit_entries"

    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(ID_CHARS))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(KEY_CHARS))
    old_value: Mapped[str] = mapped_column(Text, default="")
    new_value: Mapped[str] = mapped_column(Text, default="")


class Removal(Base):
    """A member removed by someone else: the owner, an admin, a store blacklist, the sleeping plan (R5, C15).

    Kept for the removed consumer to read why (by consumer, newest first: ``id`` is minted in time order);
    the request id makes a retried removal answer as the first did.
    """

    __tablename__ = "removals"
    __table_args__ = (
        Index("ix_removals_consumer", "consumer_id", "id"),
        UniqueConstraint("owner_key", "group_set_id", "consumer_id", "request_id", name="uq_removals_request"),
        _in_set(),
    )

    owner_key: Mapped[str] = mapped_column(String(KEY_CHARS), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    consumer_id: Mapped[str] = mapped_column(String(ID_CHARS))
    group_set_id: Mapped[str] = mapped_column(String(ID_CHARS))
    cause: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    barred: Mapped[bool] = mapped_column(Boolean, default=False)
    actor: Mapped[str] = mapped_column(String(ID_CHARS))
    request_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    # The request's fingerprint (services.common.request_ids): a reused id with another request is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_CHARS), nullable=True)
    removed_at: Mapped[datetime] = mapped_column(UtcDateTime())
