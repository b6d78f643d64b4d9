"""Ingestion of the facts upstream systems report: idempotent upserts, and the blacklist escalations they cause.

A batch is applied in one transaction, in order, the last fact per key
winning; every fact is an idempotent upsert.

Blacklist escalations (SPEC C6, C7) are decided here, at ingestion, and are
safe under concurrent ingestion on PostgreSQL: every change that can move a
count first locks the row of the consumer the count is about
(``consumers``, ``SELECT … FOR UPDATE``) and only then reads the count, in
READ COMMITTED, so of two concurrent transactions the second one waits and
counts what the first committed:

* a merchant blacklisting of X locks X before counting X's merchants (C6);
* an invitation I→X locks X before it is inserted, and a blacklisting of X
  locks X before it looks up X's inviters, so neither misses the other;
* a C7 count for inviter I locks I first.

The old-customer fans (P3) of the stores a batch's orders and follows touch
are recounted in the same transaction, buyer by buyer (``old_fans``).

On SQLite writers are serialised whole (``BEGIN IMMEDIATE``) and the locks
are no-ops.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import func, literal, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.rules import Rules
from services.eligibility import rules as domain_rules
from services.eligibility.domain import (
    Account,
    Blacklisting,
    Broadcast,
    ContentLevel,
    CrowdMembership,
    Fact,
    FanLevelFact,
    Follow,
    Invitation,
    ListingSource,
    PaidOrder,
    PushSubscription,
    RealName,
    RevisitRate,
    Scope,
    Store,
    TaoqiScore,
)
from services.eligibility.old_fans import OldFanCounts
from services.eligibility.repository import (
    FactsUnit,
    accounts,
    broadcasts,
    consumers,
    content_levels,
    crowd_members,
    exists_in,
    fan_levels,
    follows,
    invitations,
    merchant_blacklist,
    paid_orders,
    platform_blacklist,
    push_subscriptions,
    revisit_rates,
    stores,
)

# Facts stored as they come, one row per key; their fields are the table's columns.
PLAIN_FACT_TABLES: dict[type, Any] = {
    Account: accounts,
    Store: stores,
    PaidOrder: paid_orders,
    ContentLevel: content_levels,
    Follow: follows,
    RealName: consumers,
    TaoqiScore: consumers,
    CrowdMembership: crowd_members,
    FanLevelFact: fan_levels,
    PushSubscription: push_subscriptions,
    Broadcast: broadcasts,
    RevisitRate: revisit_rates,
}
COLUMN_NAMES: dict[type, dict[str, str]] = {
    RealName: {"verified": "real_name_verified"},
    TaoqiScore: {"score": "taoqi_score"},
}

UPSERT_CHUNK = 500


@dataclass(frozen=True)
class Escalation:
    """A platform blacklisting the ingestion decided (SPEC C6, C7)."""

    consumer_id: str
    source: ListingSource
    evidence: int


@dataclass(frozen=True)
class _Standing:
    """A consumer's blacklist state, read under its lock."""

    platform_listed: bool
    store_listed: bool
    any_merchant_listed: bool

    @property
    def blacklisted(self) -> bool:
        return self.platform_listed or self.any_merchant_listed


class Ingestion(FactsUnit):
    """Applies batches of facts in one transaction (a unit of work)."""

    def __init__(self, session: AsyncSession, rules: Rules) -> None:
        super().__init__(session, rules)
        self._locked: set[str] = set()

    async def ingest(self, facts: Sequence[Fact], now: datetime) -> list[Escalation]:
        """Applies a batch in order (last fact wins per key); returns the escalations it caused.

        Row locks are taken in one global order — consumers' rows first, sorted,
        then every upsert sorted by key — so concurrent batches queue rather
        than deadlock. Only the C7 walk up an invitation chain locks rows it
        could not know in advance; a deadlock there is retried by the caller.
        """
        involved: set[str] = set()
        for fact in facts:
            if isinstance(fact, Blacklisting | RealName | TaoqiScore):
                involved.add(fact.consumer_id)
            elif isinstance(fact, Invitation):
                involved.update((fact.inviter_id, fact.invitee_id))
        await self._lock(involved)
        old_fans = OldFanCounts(self.session, self.rules)
        orders = [fact for fact in facts if isinstance(fact, PaidOrder)]
        buyers = {(o.store_id, o.consumer_id) for o in orders}
        buyers |= {(f.store_id, f.consumer_id) for f in facts if isinstance(f, Follow)}
        if orders:
            buyers |= await old_fans.buyers_replaced(orders)
        await self._upsert_plain_facts(facts)
        await old_fans.recount(buyers)  # P3: what each buyer adds to their store's old-customer fans
        escalations: list[Escalation] = []
        for fact in facts:
            if isinstance(fact, Blacklisting):
                escalations += await self._apply_blacklisting(fact, now)
            elif isinstance(fact, Invitation):
                escalations += await self._apply_invitation(fact, now)
        return escalations

    async def _upsert_plain_facts(self, facts: Sequence[Fact]) -> None:
        """Facts that feed no escalation: one multi-row upsert per kind, the last fact per key winning."""
        by_kind: dict[type, dict[tuple[Any, ...], dict[str, Any]]] = {}
        for fact in facts:
            table = PLAIN_FACT_TABLES.get(type(fact))
            if table is None:
                continue
            row = _row(fact)
            key = tuple(row[column.name] for column in table.primary_key.columns)
            by_kind.setdefault(type(fact), {})[key] = row
        for kind, table in PLAIN_FACT_TABLES.items():
            rows = by_kind.get(kind)
            if rows:
                await self._upsert(table, [rows[key] for key in sorted(rows)])

    async def _upsert(self, table: Any, rows: list[dict[str, Any]]) -> None:
        """INSERT … ON CONFLICT (key) DO UPDATE the given columns, skipping rows that would not change."""
        key = [c.name for c in table.primary_key.columns]
        for start in range(0, len(rows), UPSERT_CHUNK):
            chunk = rows[start : start + UPSERT_CHUNK]
            stmt = self._insert(table).values(chunk)
            updated = [name for name in chunk[0] if name not in key]
            changed = or_(*(table.c[name].is_distinct_from(stmt.excluded[name]) for name in updated))
            stmt = stmt.on_conflict_do_update(
                index_elements=key, set_={name: stmt.excluded[name] for name in updated}, where=changed
            )
            await self.session.execute(stmt)

    async def _lock(self, consumer_ids: Iterable[str]) -> None:
        """Creates the consumers' rows if needed and locks them, in sorted order (PostgreSQL)."""
        ids = sorted(set(consumer_ids) - self._locked)
        if not ids:
            return
        for start in range(0, len(ids), UPSERT_CHUNK):
            chunk = ids[start : start + UPSERT_CHUNK]
            stmt = self._insert(consumers).values([{"consumer_id": i} for i in chunk]).on_conflict_do_nothing()
            await self.session.execute(stmt)
            if self.postgres:
                lock = (
                    select(consumers.c.consumer_id)
                    .where(consumers.c.consumer_id.in_(chunk))
                    .order_by(consumers.c.consumer_id)
                    .with_for_update()
                )
                await self.session.execute(lock)
        self._locked.update(ids)

    async def _standing(self, consumer_id: str, store_id: str = "") -> _Standing:
        """The consumer's blacklist state; call it only with the consumer locked."""
        platform = exists_in(
            platform_blacklist,
            platform_blacklist.c.consumer_id == consumer_id,
            platform_blacklist.c.listed == true(),
        )
        any_merchant = exists_in(
            merchant_blacklist,
            merchant_blacklist.c.consumer_id == consumer_id,
            merchant_blacklist.c.listed == true(),
        )
        store = (
            exists_in(
                merchant_blacklist,
                merchant_blacklist.c.consumer_id == consumer_id,
                merchant_blacklist.c.store_id == store_id,
                merchant_blacklist.c.listed == true(),
            )
            if store_id
            else literal(False)
        )
        row = (await self.session.execute(select(platform, store, any_merchant))).one()
        return _Standing(bool(row[0]), bool(row[1]), bool(row[2]))

    async def _apply_blacklisting(self, fact: Blacklisting, now: datetime) -> list[Escalation]:
        consumer = fact.consumer_id
        await self._lock([consumer])
        before = await self._standing(consumer, fact.store_id if fact.scope is Scope.MERCHANT else "")
        escalations: list[Escalation] = []
        if fact.scope is Scope.MERCHANT:
            if before.store_listed == fact.listed:
                return []  # re-sent fact: nothing changes, nothing escalates
            await self._upsert_listing(
                merchant_blacklist,
                {"consumer_id": consumer, "store_id": fact.store_id, "listed": fact.listed, "changed_at": now},
            )
            if not fact.listed:
                return []  # C6 entries stay until the platform lifts them
            merchants = await self._merchants_listing(consumer)
            if not before.platform_listed and domain_rules.c6_escalates(merchants, self.rules.join):
                await self._list_on_platform(consumer, ListingSource.C6, merchants, now)
                escalations.append(Escalation(consumer, ListingSource.C6, merchants))
        else:
            if before.platform_listed == fact.listed:
                return []
            await self._upsert_listing(
                platform_blacklist,
                {
                    "consumer_id": consumer,
                    "listed": fact.listed,
                    "source": ListingSource.REPORTED.value,
                    "evidence": 0,
                    "changed_at": now,
                },
            )
            if not fact.listed:
                return []
        if not before.blacklisted:
            escalations += await self._check_inviters(consumer, now)
        return escalations

    async def _apply_invitation(self, fact: Invitation, now: datetime) -> list[Escalation]:
        # The invitee's lock orders this against a concurrent blacklisting of the invitee.
        await self._lock([fact.invitee_id])
        stmt = self._insert(invitations).values(inviter_id=fact.inviter_id, invitee_id=fact.invitee_id)
        result = await self.session.execute(stmt.on_conflict_do_nothing())
        if result.rowcount == 0:  # type: ignore[attr-defined]  # a DML result has a rowcount; Result is typed without it
            return []  # known invitation: nothing changes
        if not (await self._standing(fact.invitee_id)).blacklisted:
            return []
        escalation, newly_blacklisted = await self._c7(fact.inviter_id, now)
        if escalation is None:
            return []
        if not newly_blacklisted:
            return [escalation]
        return [escalation, *await self._check_inviters(fact.inviter_id, now)]

    async def _check_inviters(self, consumer_id: str, now: datetime) -> list[Escalation]:
        """C7 for the inviters of a newly blacklisted consumer, and on up the chain."""
        escalations: list[Escalation] = []
        queue = deque([consumer_id])
        while queue:
            invitee = queue.popleft()
            rows = await self.session.execute(
                select(invitations.c.inviter_id)
                .where(invitations.c.invitee_id == invitee)
                .order_by(invitations.c.inviter_id)
            )
            for inviter in rows.scalars().all():
                escalation, newly_blacklisted = await self._c7(inviter, now)
                if escalation is not None:
                    escalations.append(escalation)
                if newly_blacklisted:
                    queue.append(inviter)
        return escalations

    async def _c7(self, inviter: str, now: datetime) -> tuple[Escalation | None, bool]:
        """Escalates the inviter when more than the allowed number of its invitees are blacklisted.

        Also says whether that made the inviter blacklisted where it was not
        before, which is when its own inviters need a look (the cascade ends
        because each consumer turns blacklisted at most once).
        """
        await self._lock([inviter])
        standing = await self._standing(inviter)
        if standing.platform_listed:
            return None, False
        count = await self._blacklisted_invitees(inviter)
        if not domain_rules.c7_escalates(count, self.rules.join):
            return None, False
        await self._list_on_platform(inviter, ListingSource.C7, count, now)
        return Escalation(inviter, ListingSource.C7, count), not standing.any_merchant_listed

    async def _merchants_listing(self, consumer_id: str) -> int:
        stmt = select(func.count()).where(
            merchant_blacklist.c.consumer_id == consumer_id, merchant_blacklist.c.listed == true()
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def _blacklisted_invitees(self, inviter: str) -> int:
        invitee = invitations.c.invitee_id
        blacklisted = or_(
            exists_in(platform_blacklist, platform_blacklist.c.consumer_id == invitee, platform_blacklist.c.listed),
            exists_in(merchant_blacklist, merchant_blacklist.c.consumer_id == invitee, merchant_blacklist.c.listed),
        )
        stmt = select(func.count()).where(invitations.c.inviter_id == inviter, blacklisted)
        return int((await self.session.execute(stmt)).scalar_one())

    async def _list_on_platform(self, consumer_id: str, source: ListingSource, evidence: int, now: datetime) -> None:
        await self._upsert_listing(
            platform_blacklist,
            {
                "consumer_id": consumer_id,
                "listed": True,
                "source": source.value,
                "evidence": evidence,
                "changed_at": now,
            },
        )

    async def _upsert_listing(self, table: Any, row: dict[str, Any]) -> None:
        key = [c.name for c in table.primary_key.columns]
        stmt = self._insert(table).values(row)
        stmt = stmt.on_conflict_do_update(index_elements=key, set_={k: v for k, v in row.items() if k not in key})
        await self.session.execute(stmt)


def _row(fact: Fact) -> dict[str, Any]:
    """A plain fact as its table's row: enums by value, renamed where the column says more."""
    names = COLUMN_NAMES.get(type(fact), {})
    row: dict[str, Any] = {}
    for field in dataclasses.fields(fact):
        value = getattr(fact, field.name)
        row[names.get(field.name, field.name)] = value.value if isinstance(value, Enum) else value
    return row
