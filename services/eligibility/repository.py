"""The eligibility facts' tables, and what every reader and writer of them shares.

Persistence is split by what it serves: ``ingestion`` (the facts upstream
reports, and the blacklist escalations they cause), ``verdicts`` (the facts a
create or join check reads, and the what-if sets) and ``push_facts`` (the
figures and audiences of a store's pushes, P1–P3). Each works over one
transaction: an ``AsyncSession`` (a unit of work) or, for the hot reads, a
plain connection (``Database.read``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, literal_column
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Statements
from services.common.inserts import dialect_insert
from services.common.rules import Rules
from services.common.schema import table_of
from services.eligibility.domain import Account, Platform, Role, Store
from services.eligibility.models import (
    AccountRow,
    BroadcastRow,
    ConsumerRow,
    ContentLevelRow,
    CrowdMemberRow,
    FanLevelRow,
    FollowRow,
    InvitationRow,
    MerchantBlacklistRow,
    PaidOrderRow,
    PlatformBlacklistRow,
    PushSubscriptionRow,
    RevisitRateRow,
    StoreRow,
)

accounts = table_of(AccountRow)
stores = table_of(StoreRow)
paid_orders = table_of(PaidOrderRow)
content_levels = table_of(ContentLevelRow)
follows = table_of(FollowRow)
consumers = table_of(ConsumerRow)
merchant_blacklist = table_of(MerchantBlacklistRow)
platform_blacklist = table_of(PlatformBlacklistRow)
invitations = table_of(InvitationRow)
crowd_members = table_of(CrowdMemberRow)
fan_levels = table_of(FanLevelRow)
push_subscriptions = table_of(PushSubscriptionRow)
broadcasts = table_of(BroadcastRow)
revisit_rates = table_of(RevisitRateRow)


class FactsUnit:
    """One transaction over the facts: the session (or plain connection), the rules, the dialect."""

    def __init__(self, session: AsyncSession | Statements, rules: Rules) -> None:
        """Over a session (a unit of work) or, for the reads, a plain connection (``Database.read``)."""
        self.session = session
        self.rules = rules
        self.dialect = session.bind.dialect if isinstance(session, AsyncSession) else session.dialect
        self.postgres = self.dialect.name == "postgresql"

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self.dialect, table)

    def local_day(self, column: Any) -> Any:
        """The marketplace day of a UTC instant, in SQL (D1): a ``date`` on PostgreSQL, ISO text on SQLite."""
        hours = int(self.rules.calendar.utc_offset_hours)
        if self.postgres:
            return func.date(func.timezone("UTC", column) + literal_column(f"interval '{hours} hours'"))
        return func.date(column, f"{hours:+d} hours")


def scalar_of(stmt: Select[Any]) -> Any:
    return stmt.scalar_subquery()


def exists_in(table: Any, *where: ColumnElement[bool]) -> Any:
    return exists().where(*where).select_from(table)


def store_from_row(row: Any) -> Store:
    m = row._mapping
    return Store(m["store_id"], Platform(m["platform"]), m["main_account_id"], m["operating_normally"])


def account_from_row(row: Any) -> Account:
    m = row._mapping
    return Account(
        account_id=m["account_id"],
        role=Role(m["role"]),
        store_id=m["store_id"],
        broadcast_permitted=m["broadcast_permitted"],
        own_store_id=m["own_store_id"],
    )
