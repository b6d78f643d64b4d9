"""The push database: accounts, pushes, audiences, quotas, grants, notices, the delivery ledger.

Every table that grows leads its key with the store's id (the content
account's), so the data can be distributed by store without a redesign
(DESIGN "Past one database"). The guards of the quotas are in the schema:

* ``recall_slots`` has one row per (store, calendar year, tier): a recall
  quota cannot be spent twice, whatever the replicas do (P2);
* a grant is used by a conditional ``UPDATE … WHERE push_id IS NULL`` (P5);
* the ``push_accounts`` row is locked by every submission, review and
  cancellation of the store, which serialises the P1 interval decision;
* ``deliveries`` has one row per (store, push, recipient): a recipient is
  written at most once (P7).

The schema itself is created by ``migrations/versions``, never ``create_all``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.request_ids import FINGERPRINT_CHARS
from services.common.schema import NamedConstraints
from services.common.sharding import coordinator, distributed_by
from services.common.sqltypes import UtcDateTime

ID = 64  # services.common.validation.ID_PATTERN allows at most 64 characters
STATE = 16
TITLE = 64

DUE_WHERE = "state IN ('approved', 'sending')"
DRAFT_WHERE = "state IN ('draft', 'discarded')"
PENDING_WHERE = "state = 'pending_review'"


class Base(NamedConstraints, DeclarativeBase):
    """The push database."""

    tenant_column = "store_id"


class PushAccountRow(Base):
    """A store's content account: the row its quota decisions lock (P1, P2, P5, P6)."""

    __tablename__ = "push_accounts"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PushRow(Base):
    """One push: a draft being filled, then submitted, reviewed, scheduled, sent (P6, P7)."""

    __tablename__ = "pushes"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    push_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    kind: Mapped[str] = mapped_column(String(STATE))
    state: Mapped[str] = mapped_column(String(STATE))
    title: Mapped[str] = mapped_column(String(TITLE))
    body: Mapped[str] = mapped_column(Text)
    account_id: Mapped[str] = mapped_column(String(ID))
    grant_id: Mapped[str | None] = mapped_column(String(ID), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(ID), nullable=True)
    # The request's fingerprint (services.common.request_ids): a reused id with another request is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_CHARS), nullable=True)
    # The figures the rules read at submission (kept for audit).
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    audience_limit: Mapped[int] = mapped_column(BigInteger)
    audience_size: Mapped[int] = mapped_column(BigInteger)
    quota_year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_returned: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(ID), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    review_note: Mapped[str] = mapped_column(Text)
    send_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    delivered_count: Mapped[int] = mapped_column(BigInteger)
    # P7: the last audience recipient whose delivery is written; batches resume after it.
    dispatch_cursor: Mapped[str | None] = mapped_column(String(ID), nullable=True)

    __table_args__ = (
        UniqueConstraint("store_id", "request_id", name="uq_pushes_store_request"),
        # Reviews and reads name a push by its id alone.
        Index("ix_pushes_push_id", "push_id"),
        # A store's pushes, newest first; P1's last subscription push.
        Index("ix_pushes_store_kind_submitted", "store_id", "kind", "submitted_at"),
        Index("ix_pushes_store_submitted", "store_id", "submitted_at", "push_id"),
        # The dispatcher's queue: only approved and sending pushes are in it.
        Index(
            "ix_pushes_due",
            "send_at",
            postgresql_where=text(DUE_WHERE),
            sqlite_where=text(DUE_WHERE),
        ),
        # Ops' review queue (P8): pending pushes, oldest submission first, across stores or in one. Partial,
        # so the queue's reads, pages and its oldest entry (the monitored age) touch pending rows only.
        Index(
            "ix_pushes_pending",
            "submitted_at",
            "push_id",
            postgresql_where=text(PENDING_WHERE),
            sqlite_where=text(PENDING_WHERE),
        ),
        Index(
            "ix_pushes_pending_store",
            "store_id",
            "submitted_at",
            "push_id",
            postgresql_where=text(PENDING_WHERE),
            sqlite_where=text(PENDING_WHERE),
        ),
        # Drafts abandoned by a gateway that went away, for the clean-up.
        Index(
            "ix_pushes_drafts",
            "created_at",
            postgresql_where=text(DRAFT_WHERE),
            sqlite_where=text(DRAFT_WHERE),
        ),
    )


class AudienceRow(Base):
    """A recipient of a push, snapshotted at submission (P6, P7)."""

    __tablename__ = "push_audience"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    push_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(String(ID), primary_key=True)


class RecallSlotRow(Base):
    """A recall tier spent in a calendar year: the key admits one per (store, year, tier) (P2)."""

    __tablename__ = "recall_slots"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(STATE), primary_key=True)
    push_id: Mapped[str] = mapped_column(String(ID))
    spent_at: Mapped[datetime] = mapped_column(UtcDateTime)


class GrantRow(Base):
    """A mass-send grant from an official activity; used by exactly one push (P5)."""

    __tablename__ = "grants"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    grant_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    audience_size: Mapped[int] = mapped_column(BigInteger)
    activity: Mapped[str] = mapped_column(String(TITLE))
    granted_by: Mapped[str] = mapped_column(String(ID))
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(ID), nullable=True)
    # The request's fingerprint (services.common.request_ids): a reused id with another request is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT_CHARS), nullable=True)
    push_id: Mapped[str | None] = mapped_column(String(ID), nullable=True)

    __table_args__ = (UniqueConstraint("store_id", "request_id", name="uq_grants_store_request"),)


class NoticeRow(Base):
    """A back-office announcement: a recall chance earned; once per (store, year, tier) (P4)."""

    __tablename__ = "notices"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    notice_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    kind: Mapped[str] = mapped_column(String(STATE))
    year: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("store_id", "year", "kind", name="uq_notices_store_year_kind"),
        Index("ix_notices_store_created", "store_id", "created_at", "notice_id"),
    )


class DeliveryRow(Base):
    """One recipient of one push, written once (P7): the key refuses a second row."""

    __tablename__ = "deliveries"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    push_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    written_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeliveryBatchRow(Base):
    """A batch of deliveries: the recipients after ``after_recipient`` up to ``last_recipient``.

    ``ledger_seq`` orders the batches of every push as they committed, so
    downstream readers follow the ledger with a cursor that never skips one.
    """

    __tablename__ = "delivery_batches"

    store_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    push_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    ledger_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    after_recipient: Mapped[str] = mapped_column(String(ID))
    last_recipient: Mapped[str] = mapped_column(String(ID))
    size: Mapped[int] = mapped_column(Integer)
    written_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_delivery_batches_ledger_seq", "ledger_seq", unique=True),
        {
            "info": distributed_by(
                "store_id", ix_delivery_batches_ledger_seq="the platform's ledger order; per shard in ADR 0014"
            )
        },
    )


class LedgerHeadRow(Base):
    """The last ledger sequence number given out; its row lock orders batch commits."""

    __tablename__ = "ledger_head"
    __table_args__ = ({"info": coordinator("the platform's one delivery ledger; its per-shard design is ADR 0014")},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
