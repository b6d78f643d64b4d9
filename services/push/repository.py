"""The push service's unit of work: one transaction, the store's account lock, the quota it reads.

Persistence is split by aggregate, each a ``PushUnit`` over one session (one
transaction): ``drafts`` (submission: draft, audience, seal; the clean-up),
``reviews`` (review, cancellation, the queue, listings), ``quotas`` (notices,
grants) and ``deliveries`` (the dispatcher's batches and the ledger).

Quotas hold with any number of replicas on one PostgreSQL because every
decision that spends or returns one runs under the row lock of the store's
``push_accounts`` row (``SELECT … FOR UPDATE``), taken first, before the
push's own row; and the schema refuses what the lock should already
prevent: one ``recall_slots`` row per (store, year, tier) (P2), a grant used
by a conditional ``UPDATE … WHERE push_id IS NULL`` (P5).

The dispatcher's batches (P7) are ``deliveries``'s.

On SQLite writers are serialised whole (``BEGIN IMMEDIATE``) and ``FOR
UPDATE`` is not rendered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import grpc
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.calendar import MarketCalendar
from services.common.errors import Failure, NotFound, RuleRefusal
from services.common.inserts import dialect_insert
from services.common.rules import PushRules
from services.common.schema import table_of
from services.push import rules as domain
from services.push.kinds import Quota, kinds_with
from services.push.models import (
    AudienceRow,
    DeliveryBatchRow,
    DeliveryRow,
    GrantRow,
    LedgerHeadRow,
    NoticeRow,
    PushAccountRow,
    PushRow,
    RecallSlotRow,
)
from services.push.rules import AccountFacts, GrantView, PushKind, PushState, QuotaState

accounts = table_of(PushAccountRow)
pushes = table_of(PushRow)
audience = table_of(AudienceRow)
recall_slots = table_of(RecallSlotRow)
grants = table_of(GrantRow)
notices = table_of(NoticeRow)
deliveries = table_of(DeliveryRow)
batches = table_of(DeliveryBatchRow)
ledger_head = table_of(LedgerHeadRow)

MAX_LISTED_GRANTS = 100
U = TypeVar("U", bound="PushUnit")


def facts_to_json(facts: AccountFacts) -> dict[str, Any]:
    return {
        "subscribers": facts.subscribers,
        "old_customer_fans": facts.old_customer_fans,
        "recent_broadcasts": facts.recent_broadcasts,
        "revisit_rate_bp": facts.revisit_rate_bp,
    }


def facts_from_json(data: dict[str, Any]) -> AccountFacts:
    return AccountFacts(
        subscribers=int(data.get("subscribers", 0)),
        old_customer_fans=int(data.get("old_customer_fans", 0)),
        recent_broadcasts=int(data.get("recent_broadcasts", 0)),
        revisit_rate_bp=data.get("revisit_rate_bp"),
    )


class PushUnit:
    """One transaction of the push service."""

    def __init__(self, session: AsyncSession, rules: PushRules, now: datetime, market: MarketCalendar) -> None:
        self.session = session
        self.rules = rules
        self.now = now
        self.market = market
        self.postgres = session.bind.dialect.name == "postgresql"

    def along(self, unit: type[U]) -> U:
        """Another aggregate's unit of work in this same transaction."""
        return unit(self.session, self.rules, self.now, self.market)

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self.session.bind.dialect, table)

    # -- locks and reads ----------------------------------------------------------------------

    async def lock_account(self, store_id: str) -> None:
        """Creates the store's account row if needed and locks it (PostgreSQL)."""
        await self.session.execute(
            self._insert(accounts).values(store_id=store_id, created_at=self.now).on_conflict_do_nothing()
        )
        if self.postgres:
            await self.session.execute(
                select(accounts.c.store_id).where(accounts.c.store_id == store_id).with_for_update()
            )

    async def push(self, store_id: str, push_id: str, *, lock: bool = False) -> PushRow | None:
        stmt = select(PushRow).where(PushRow.store_id == store_id, PushRow.push_id == push_id)
        if lock:
            stmt = stmt.with_for_update()
        found: PushRow | None = await self.session.scalar(stmt.execution_options(populate_existing=True))
        return found

    async def store_of(self, push_id: str) -> str | None:
        """The store of a submitted push (drafts are nobody's business but the gateway's)."""
        row = await self.session.execute(
            select(pushes.c.store_id, pushes.c.state).where(pushes.c.push_id == push_id).limit(1)
        )
        found = row.first()
        if found is None or PushState(found.state) not in domain.SUBMITTED_STATES:
            return None
        return str(found.store_id)

    async def submitted(self, push_id: str, *, lock: bool = False, store_id: str = "") -> PushRow:
        store = await self.store_of(push_id)
        if store is None or (store_id and store != store_id):
            raise NotFound("push", push_id)
        row = await self.push(store, push_id, lock=lock)
        assert row is not None
        return row

    async def quota_state(self, store_id: str) -> QuotaState:
        """P1's last counted subscription push, P2's tiers spent this year, P5's unused grants."""
        last = await self.session.scalar(
            select(func.max(pushes.c.submitted_at)).where(
                pushes.c.store_id == store_id,
                pushes.c.kind.in_([kind.value for kind in kinds_with(Quota.INTERVAL)]),
                pushes.c.submitted_at.is_not(None),
                pushes.c.quota_returned.is_(False),
            )
        )
        year = domain.year_of(self.now, self.market)
        used = await self.session.scalars(
            select(recall_slots.c.kind).where(recall_slots.c.store_id == store_id, recall_slots.c.year == year)
        )
        unused = await self.session.execute(
            select(grants.c.grant_id, grants.c.audience_size)
            .where(grants.c.store_id == store_id, grants.c.push_id.is_(None))
            .order_by(grants.c.granted_at, grants.c.grant_id)
            .limit(MAX_LISTED_GRANTS)
        )
        return QuotaState(
            last_subscription_at=last,
            recall_used=frozenset(PushKind(k) for k in used),
            unused_grants=tuple(GrantView(g.grant_id, int(g.audience_size)) for g in unused),
        )

    async def grant(self, store_id: str, grant_id: str) -> GrantView | None:
        row = (
            await self.session.execute(
                select(grants.c.grant_id, grants.c.audience_size, grants.c.push_id).where(
                    grants.c.store_id == store_id, grants.c.grant_id == grant_id
                )
            )
        ).first()
        return GrantView(row.grant_id, int(row.audience_size), row.push_id or "") if row is not None else None


def refusal(failures: list[Failure]) -> RuleRefusal:
    """Only a spent quota is RESOURCE_EXHAUSTED; any unmet condition, FAILED_PRECONDITION."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED if domain.only_quota(failures) else grpc.StatusCode.FAILED_PRECONDITION
    return RuleRefusal(failures, code=code)
