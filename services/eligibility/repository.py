"""Persistence of the eligibility facts over one ``AsyncSession`` (one transaction).

Reads load everything a check needs in one statement (correlated scalar
subqueries over indexed keys; windows are counted and summed by the database,
never by loading orders). Writes are idempotent upserts.

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

On SQLite writers are serialised whole (``BEGIN IMMEDIATE``) and the locks
are no-ops.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, exists, func, literal, literal_column, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Statements
from services.common.inserts import dialect_insert
from services.common.rules import Rules
from services.common.sqlite_driver import on_driver
from services.eligibility import rules as domain_rules
from services.eligibility.domain import (
    Account,
    Blacklisting,
    Broadcast,
    ContentLevel,
    CreateFacts,
    CrowdMembership,
    CrowdThreshold,
    Fact,
    FanLevel,
    FanLevelFact,
    FanLevelThreshold,
    Follow,
    FollowThreshold,
    GroupKind,
    Invitation,
    JoinFacts,
    JoinQuery,
    ListingSource,
    PaidOrder,
    Platform,
    PlatformListing,
    PushAudience,
    PushFacts,
    PushSubscription,
    RealName,
    RevisitRate,
    Role,
    Scope,
    SpendThreshold,
    Store,
    TaoqiScore,
    Threshold,
)
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

accounts = AccountRow.__table__
stores = StoreRow.__table__
paid_orders = PaidOrderRow.__table__
content_levels = ContentLevelRow.__table__
follows = FollowRow.__table__
consumers = ConsumerRow.__table__
merchant_blacklist = MerchantBlacklistRow.__table__
platform_blacklist = PlatformBlacklistRow.__table__
invitations = InvitationRow.__table__
crowd_members = CrowdMemberRow.__table__
fan_levels = FanLevelRow.__table__
push_subscriptions = PushSubscriptionRow.__table__
broadcasts = BroadcastRow.__table__
revisit_rates = RevisitRateRow.__table__

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

# Rows per multi-row INSERT, well under both backends' bound-parameter limits.
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


class EligibilityRepository:
    def __init__(self, session: AsyncSession | Statements, rules: Rules) -> None:
        """Over a session (a unit of work) or, for the reads, a plain connection (``Database.read``)."""
        self.session = session
        self.rules = rules
        self.dialect = session.bind.dialect if isinstance(session, AsyncSession) else session.dialect
        self.postgres = self.dialect.name == "postgresql"
        self._locked: set[str] = set()

    # --- reads -------------------------------------------------------------------

    async def account(self, account_id: str) -> Account | None:
        row = (await self.session.execute(select(accounts).where(accounts.c.account_id == account_id))).first()
        return _account(row) if row is not None else None

    async def store(self, store_id: str) -> Store | None:
        row = (await self.session.execute(select(stores).where(stores.c.store_id == store_id))).first()
        return _store(row) if row is not None else None

    async def create_facts(self, account_id: str, kind: GroupKind, now: datetime) -> CreateFacts | None:
        """The account, its store and, for store groups, the E2/E3 figures: one statement."""
        columns: list[Any] = [
            *accounts.c,
            stores.c.store_id.label("s_store_id"),
            stores.c.platform.label("s_platform"),
            stores.c.main_account_id.label("s_main_account_id"),
            stores.c.operating_normally.label("s_operating_normally"),
        ]
        create = self.rules.create
        if kind is GroupKind.STORE:
            cutoff = domain_rules.content_level_visible_before(now, create, self.rules.calendar.market)
            of_store = content_levels.c.store_id == accounts.c.store_id
            visible = select(content_levels).where(of_store, content_levels.c.updated_at < cutoff)
            visible = visible.order_by(content_levels.c.updated_at.desc()).limit(1)
            pending = select(content_levels).where(
                of_store, content_levels.c.updated_at >= cutoff, content_levels.c.level >= create.min_content_level
            )
            pending = pending.order_by(content_levels.c.updated_at.asc()).limit(1)
            columns += [
                _scalar(
                    select(func.count()).where(
                        paid_orders.c.store_id == accounts.c.store_id,
                        paid_orders.c.paid_at >= domain_rules.paid_orders_window_start(now, create),
                        paid_orders.c.paid_at <= now,
                    )
                ).label("paid_orders"),
                _scalar(visible.with_only_columns(content_levels.c.level)).label("visible_level"),
                _scalar(visible.with_only_columns(content_levels.c.updated_at)).label("visible_at"),
                _scalar(pending.with_only_columns(content_levels.c.level)).label("pending_level"),
                _scalar(pending.with_only_columns(content_levels.c.updated_at)).label("pending_at"),
            ]
        stmt = (
            select(*columns)
            .select_from(accounts.outerjoin(stores, stores.c.store_id == accounts.c.store_id))
            .where(accounts.c.account_id == account_id)
        )
        row = (await self.session.execute(stmt)).first()
        if row is None:
            return None
        m = row._mapping
        store = None
        if m["s_store_id"] is not None:
            store = Store(m["s_store_id"], Platform(m["s_platform"]), m["s_main_account_id"], m["s_operating_normally"])
        if kind is not GroupKind.STORE:
            return CreateFacts(_account(row), store)
        history = []
        if m["visible_level"] is not None:
            history.append(ContentLevel(m["s_store_id"] or "", m["visible_level"], m["visible_at"]))
        if m["pending_level"] is not None:
            history.append(ContentLevel(m["s_store_id"] or "", m["pending_level"], m["pending_at"]))
        return CreateFacts(_account(row), store, int(m["paid_orders"] or 0), tuple(history))

    async def join_facts(self, query: JoinQuery, now: datetime) -> JoinFacts | None:
        """The consumer's facts for this join (and only those the threshold needs): one statement."""
        stmt = _join_statement(bool(query.store_id), type(query.threshold))
        threshold = query.threshold
        params = {
            "consumer": query.consumer_id,
            "store": query.store_id,
            "streamer": query.streamer_id,
            "crowd": threshold.crowd_id if isinstance(threshold, CrowdThreshold) else "",
            "window_start": domain_rules.spend_window_start(now, self.rules.join),
            "now": now,
        }
        row = (await self.session.execute(stmt, params)).first()
        if row is None:
            return None
        m = row._mapping
        listing = None
        if m["p_listed"]:
            listing = PlatformListing(ListingSource(m["p_source"]), m["p_evidence"])
        return JoinFacts(
            account=_account(row),
            real_name_verified=bool(m["real_name_verified"]),
            taoqi_score=m["taoqi_score"] or 0,
            platform_listing=listing,
            on_store_blacklist=bool(m.get("on_store_blacklist")),
            follows_store=bool(m.get("follows_store")),
            spend_fen=int(m.get("spend_fen") or 0),
            in_crowd=bool(m.get("in_crowd")),
            fan_level=FanLevel(m["fan_level"]) if m.get("fan_level") is not None else FanLevel.NONE,
        )

    # --- what-if (X2) ----------------------------------------------------------------

    async def known_consumers(self, store_id: str, streamer_id: str) -> set[str]:
        """Consumers with a fact tying them to the store (orders, follows, crowds) or streamer (fan levels)."""
        parts: list[Any] = []
        if store_id:
            parts += [
                select(paid_orders.c.consumer_id).where(paid_orders.c.store_id == store_id),
                select(follows.c.consumer_id).where(follows.c.store_id == store_id),
                select(crowd_members.c.consumer_id).where(crowd_members.c.store_id == store_id),
            ]
        if streamer_id:
            parts.append(select(fan_levels.c.consumer_id).where(fan_levels.c.streamer_id == streamer_id))
        found: set[str] = set()
        for part in parts:
            found.update(await self.session.scalars(part.distinct()))
        return found

    async def meeting(self, threshold: Threshold, store_id: str, streamer_id: str, now: datetime) -> set[str]:
        """Everyone who meets ``threshold`` now (C9, C10), as one set query; a password: nobody."""
        query: Any
        if isinstance(threshold, FollowThreshold):
            query = select(follows.c.consumer_id).where(follows.c.store_id == store_id, follows.c.following == true())
        elif isinstance(threshold, SpendThreshold):
            query = (
                select(paid_orders.c.consumer_id)
                .where(
                    paid_orders.c.store_id == store_id,
                    paid_orders.c.paid_at >= domain_rules.spend_window_start(now, self.rules.join),
                    paid_orders.c.paid_at <= now,
                )
                .group_by(paid_orders.c.consumer_id)
                .having(func.sum(paid_orders.c.amount_fen) >= threshold.min_spend_fen)
            )
        elif isinstance(threshold, CrowdThreshold):
            query = select(crowd_members.c.consumer_id).where(
                crowd_members.c.store_id == store_id,
                crowd_members.c.crowd_id == threshold.crowd_id,
                crowd_members.c.member == true(),
            )
        elif isinstance(threshold, FanLevelThreshold):
            query = select(fan_levels.c.consumer_id).where(
                fan_levels.c.streamer_id == streamer_id, fan_levels.c.level >= int(threshold.min_level)
            )
        else:
            return set()
        return set(await self.session.scalars(query))

    # --- push facts (P1–P3) -----------------------------------------------------------

    def _local_day(self, column: Any) -> Any:
        """P3: the marketplace-local calendar day of a UTC instant, in SQL."""
        hours = int(self.rules.calendar.utc_offset_hours)
        if self.postgres:
            return func.date(func.timezone("UTC", column) + literal_column(f"interval '{hours} hours'"))
        return func.date(column, f"{hours:+d} hours")

    def _old_customers(self, store_id: str, now: datetime) -> Any:
        """P3: the store's buyers with orders on enough distinct days in the window, and their last order.

        Read from ``ix_paid_orders_store_consumer_paid_at`` in consumer order;
        the orders themselves are never loaded.
        """
        push = self.rules.push
        o = paid_orders.c
        return (
            select(o.consumer_id.label("consumer_id"), func.max(o.paid_at).label("last_paid"))
            .where(
                o.store_id == store_id,
                o.paid_at >= domain_rules.old_customer_window_start(now, push, self.rules.calendar.market),
                o.paid_at <= now,
            )
            .group_by(o.consumer_id)
            .having(func.count(func.distinct(self._local_day(o.paid_at))) >= push.old_customer_min_days)
            .subquery("old_customers")
        )

    @staticmethod
    def _is_fan(store_id: str, consumer: Any) -> Any:
        return _exists(
            follows, follows.c.store_id == store_id, follows.c.consumer_id == consumer, follows.c.following == true()
        )

    async def push_facts(self, store_id: str, now: datetime) -> PushFacts | None:
        """The P1/P2 figures of a store's content account: one statement, counted by the database."""
        push = self.rules.push
        old = self._old_customers(store_id, now)
        revisit = (
            select(revisit_rates.c.rate_bp)
            .where(revisit_rates.c.store_id == store_id, revisit_rates.c.computed_at <= now)
            .order_by(revisit_rates.c.computed_at.desc())
            .limit(1)
        )
        stmt = select(
            stores.c.main_account_id,
            _scalar(
                select(func.count()).where(
                    push_subscriptions.c.store_id == store_id, push_subscriptions.c.subscribed == true()
                )
            ).label("subscribers"),
            _scalar(select(func.count()).select_from(old).where(self._is_fan(store_id, old.c.consumer_id))).label(
                "old_customer_fans"
            ),
            _scalar(
                select(func.count()).where(
                    broadcasts.c.store_id == store_id,
                    broadcasts.c.published_at >= domain_rules.broadcast_window_start(now, push),
                    broadcasts.c.published_at <= now,
                )
            ).label("recent_broadcasts"),
            _scalar(revisit).label("revisit_rate_bp"),
        ).where(stores.c.store_id == store_id)
        row = (await self.session.execute(stmt)).first()
        if row is None:
            return None
        m = row._mapping
        return PushFacts(
            store_id=store_id,
            main_account_id=m["main_account_id"],
            subscribers=int(m["subscribers"] or 0),
            old_customer_fans=int(m["old_customer_fans"] or 0),
            recent_broadcasts=int(m["recent_broadcasts"] or 0),
            revisit_rate_bp=m["revisit_rate_bp"],
        )

    async def store_exists(self, store_id: str) -> bool:
        return bool((await self.session.execute(select(_exists(stores, stores.c.store_id == store_id)))).scalar())

    async def push_audience(
        self, store_id: str, audience: PushAudience, limit: int, chunk: int, now: datetime
    ) -> AsyncIterator[list[str]]:
        """The recipients in chunks of ``chunk`` ids, streamed from a server-side cursor.

        Subscribers and fans in consumer order (P1, P5); the recall audience is
        the old customers (P3) who are not fans, most recent buyers first (P2).
        """
        if audience is PushAudience.SUBSCRIBERS:
            stmt = (
                select(push_subscriptions.c.consumer_id)
                .where(push_subscriptions.c.store_id == store_id, push_subscriptions.c.subscribed == true())
                .order_by(push_subscriptions.c.consumer_id)
            )
        elif audience is PushAudience.FANS:
            stmt = (
                select(follows.c.consumer_id)
                .where(follows.c.store_id == store_id, follows.c.following == true())
                .order_by(follows.c.consumer_id)
            )
        else:
            old = self._old_customers(store_id, now)
            stmt = (
                select(old.c.consumer_id)
                .where(~self._is_fan(store_id, old.c.consumer_id))
                .order_by(old.c.last_paid.desc(), old.c.consumer_id)
            )
        if limit:
            stmt = stmt.limit(limit)
        result = await self.session.stream(stmt.execution_options(yield_per=chunk))
        async for partition in result.partitions(chunk):
            yield [row[0] for row in partition]

    # --- ingestion -------------------------------------------------------------------

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
        await self._upsert_plain_facts(facts)
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

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self.dialect, table)

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
        platform = _exists(
            platform_blacklist,
            platform_blacklist.c.consumer_id == consumer_id,
            platform_blacklist.c.listed == true(),
        )
        any_merchant = _exists(
            merchant_blacklist,
            merchant_blacklist.c.consumer_id == consumer_id,
            merchant_blacklist.c.listed == true(),
        )
        store = (
            _exists(
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
        if result.rowcount == 0:  # type: ignore[attr-defined]
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
            _exists(platform_blacklist, platform_blacklist.c.consumer_id == invitee, platform_blacklist.c.listed),
            _exists(merchant_blacklist, merchant_blacklist.c.consumer_id == invitee, merchant_blacklist.c.listed),
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


@functools.cache
def _join_statement(for_store: bool, threshold: type[Threshold]) -> Select[Any]:
    """The join-facts statement for one shape of join, built once and reused with new parameters.

    A check is the hottest read there is; a prebuilt statement skips building the
    expression and its cache key on every call (SQLAlchemy then finds the compiled
    form at once).
    """
    consumer, store = bindparam("consumer"), bindparam("store")
    columns: list[Any] = [
        *accounts.c,
        consumers.c.real_name_verified,
        consumers.c.taoqi_score,
        platform_blacklist.c.listed.label("p_listed"),
        platform_blacklist.c.source.label("p_source"),
        platform_blacklist.c.evidence.label("p_evidence"),
    ]
    if for_store:
        columns.append(
            _exists(
                merchant_blacklist,
                merchant_blacklist.c.consumer_id == consumer,
                merchant_blacklist.c.store_id == store,
                merchant_blacklist.c.listed == true(),
            ).label("on_store_blacklist")
        )
    if threshold is FollowThreshold:
        columns.append(
            _exists(
                follows, follows.c.store_id == store, follows.c.consumer_id == consumer, follows.c.following == true()
            ).label("follows_store")
        )
    elif threshold is SpendThreshold:
        spend = select(func.coalesce(func.sum(paid_orders.c.amount_fen), 0)).where(
            paid_orders.c.store_id == store,
            paid_orders.c.consumer_id == consumer,
            paid_orders.c.paid_at >= bindparam("window_start", type_=paid_orders.c.paid_at.type),
            paid_orders.c.paid_at <= bindparam("now", type_=paid_orders.c.paid_at.type),
        )
        columns.append(_scalar(spend).label("spend_fen"))
    elif threshold is CrowdThreshold:
        columns.append(
            _exists(
                crowd_members,
                crowd_members.c.store_id == store,
                crowd_members.c.crowd_id == bindparam("crowd"),
                crowd_members.c.consumer_id == consumer,
                crowd_members.c.member == true(),
            ).label("in_crowd")
        )
    elif threshold is FanLevelThreshold:
        level = select(fan_levels.c.level).where(
            fan_levels.c.consumer_id == consumer, fan_levels.c.streamer_id == bindparam("streamer")
        )
        columns.append(_scalar(level).label("fan_level"))
    return on_driver(  # on SQLite it runs on the driver, compiled once (``sqlite_driver``)
        select(*columns)
        .select_from(
            accounts.outerjoin(consumers, consumers.c.consumer_id == accounts.c.account_id).outerjoin(
                platform_blacklist,
                and_(platform_blacklist.c.consumer_id == accounts.c.account_id, platform_blacklist.c.listed),
            )
        )
        .where(accounts.c.account_id == consumer)
    )


def _scalar(stmt: Select[Any]) -> Any:
    return stmt.scalar_subquery()


def _exists(table: Any, *where: ColumnElement[bool]) -> Any:
    return exists().where(*where).select_from(table)


def _store(row: Any) -> Store:
    m = row._mapping
    return Store(m["store_id"], Platform(m["platform"]), m["main_account_id"], m["operating_normally"])


def _account(row: Any) -> Account:
    m = row._mapping
    return Account(
        account_id=m["account_id"],
        role=Role(m["role"]),
        store_id=m["store_id"],
        broadcast_permitted=m["broadcast_permitted"],
        own_store_id=m["own_store_id"],
    )
