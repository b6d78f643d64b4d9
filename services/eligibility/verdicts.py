"""The facts a verdict reads: an account and its store, a create check (E2, E3), a join check, the what-if sets (X2).

Reads load everything a check needs in one statement (correlated scalar
subqueries over indexed keys; windows are counted and summed by the
database, never by loading orders).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, select, true

from services.common.sqlite_driver import on_driver
from services.eligibility import rules as domain_rules
from services.eligibility.domain import (
    Account,
    ContentLevel,
    CreateFacts,
    CrowdThreshold,
    FanLevel,
    FanLevelThreshold,
    FollowThreshold,
    GroupKind,
    JoinFacts,
    JoinQuery,
    ListingSource,
    Platform,
    PlatformListing,
    SpendThreshold,
    Store,
    Threshold,
)
from services.eligibility.repository import (
    FactsUnit,
    account_from_row,
    accounts,
    consumers,
    content_levels,
    crowd_members,
    exists_in,
    fan_levels,
    follows,
    merchant_blacklist,
    paid_orders,
    platform_blacklist,
    scalar_of,
    store_from_row,
    stores,
)


class VerdictReads(FactsUnit):
    """What create and join checks, and the what-if, read."""

    async def account(self, account_id: str) -> Account | None:
        row = (await self.session.execute(select(accounts).where(accounts.c.account_id == account_id))).first()
        return account_from_row(row) if row is not None else None

    async def store(self, store_id: str) -> Store | None:
        row = (await self.session.execute(select(stores).where(stores.c.store_id == store_id))).first()
        return store_from_row(row) if row is not None else None

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
                scalar_of(
                    select(func.count()).where(
                        paid_orders.c.store_id == accounts.c.store_id,
                        paid_orders.c.paid_at >= domain_rules.paid_orders_window_start(now, create),
                        paid_orders.c.paid_at <= now,
                    )
                ).label("paid_orders"),
                scalar_of(visible.with_only_columns(content_levels.c.level)).label("visible_level"),
                scalar_of(visible.with_only_columns(content_levels.c.updated_at)).label("visible_at"),
                scalar_of(pending.with_only_columns(content_levels.c.level)).label("pending_level"),
                scalar_of(pending.with_only_columns(content_levels.c.updated_at)).label("pending_at"),
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
            return CreateFacts(account_from_row(row), store)
        history = []
        if m["visible_level"] is not None:
            history.append(ContentLevel(m["s_store_id"] or "", m["visible_level"], m["visible_at"]))
        if m["pending_level"] is not None:
            history.append(ContentLevel(m["s_store_id"] or "", m["pending_level"], m["pending_at"]))
        return CreateFacts(account_from_row(row), store, int(m["paid_orders"] or 0), tuple(history))

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
            account=account_from_row(row),
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
            exists_in(
                merchant_blacklist,
                merchant_blacklist.c.consumer_id == consumer,
                merchant_blacklist.c.store_id == store,
                merchant_blacklist.c.listed == true(),
            ).label("on_store_blacklist")
        )
    if threshold is FollowThreshold:
        columns.append(
            exists_in(
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
        columns.append(scalar_of(spend).label("spend_fen"))
    elif threshold is CrowdThreshold:
        columns.append(
            exists_in(
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
        columns.append(scalar_of(level).label("fan_level"))
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
