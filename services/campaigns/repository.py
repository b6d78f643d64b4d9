"""Persistence of the campaigns service, one method per unit of work.

Every method runs inside the caller's transaction (one per RPC, one store).
The caps hold with any number of replicas on one PostgreSQL because each is
decided where the database serialises it:

- **Stock (M2)**: a purchase (``orders``) takes stock with one conditional
  ``UPDATE items SET stock = stock - q WHERE … AND stock >= q`` and writes the
  purchase row in the same transaction; a failure after the update rolls both
  back. The CHECK ``stock >= 0`` is the last guard. ``(store_id, request_id)``
  is unique, so a retried purchase finds the first one and a racing retry
  fails its insert, rolls back its stock, and is answered by the replay.
- **Activities at once (M11)**: a creation locks the group-set's slot row
  (``SELECT … FOR UPDATE``) and counts the overlapping activities under it.
- **Claims (M10)**: a claim locks the consumer's wallet row at the store, so
  the wallet size and the per-user limits are counted under the lock; the
  pool's prizes go with a conditional ``UPDATE pools SET remaining =
  remaining - 1 WHERE remaining > 0``.
- **Refunds (M9)** and **end cards (M6)**: the expiry job claims rows with
  ``FOR UPDATE SKIP LOCKED`` and conditional state changes, and the ledger's
  unique ``(store_id, source, source_id)`` refunds a packet or pool at most
  once; an end card is unique per activity.

Locks are taken in one order — activity (share, for a flash purchase), item,
claims; wallet, pool — so there are no deadlock cycles. On SQLite the engine
runs one writer at a time (``BEGIN IMMEDIATE``) and ``FOR UPDATE`` is not
rendered.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import rules as domain
from services.campaigns.models import (
    STOCK_CEILING,
    Activity,
    CheckIn,
    Claim,
    EndCard,
    GroupSlot,
    Item,
    Pool,
    Purchase,
    Refund,
    Restock,
    StoreStream,
    Trumpet,
    Vote,
    Wallet,
)
from services.campaigns.rules import ActivityKind, ClaimState, Platform, PrizeKind
from services.common.bounds import MAX_INT32, joined_sum, saturated, split_sum
from services.common.errors import AlreadyExists, Failure, InvalidArgument, NotFound, RuleRefusal
from services.common.ids import new_id
from services.common.inserts import dialect_insert
from services.common.rules import Rules

REFUND_EXPIRED_RED_PACKET = "expired_red_packet"
REFUND_UNCLAIMED_POOL = "unclaimed_pool"


# -- inputs and outcomes -----------------------------------------------------------------------


@dataclass(frozen=True)
class ItemUpdate:
    store_id: str
    item_id: str
    platform: Platform
    sku_count: int
    price_min_fen: int
    price_max_fen: int
    initial_stock: int


@dataclass(frozen=True)
class NewPool:
    kind: PrizeKind
    value_fen: int
    count: int
    per_user_limit: int
    expires_at: datetime


@dataclass(frozen=True)
class NewActivity:
    request_id: str
    store_id: str
    group_set_id: str
    created_by: str
    kind: ActivityKind
    title: str
    window: domain.Window
    item_id: str = ""
    price_fen: int = 0
    group_size: int = 0
    options: tuple[str, ...] = ()
    pools: tuple[NewPool, ...] = ()


@dataclass(frozen=True)
class ActivityView:
    activity: Activity
    pools: tuple[Pool, ...]


@dataclass(frozen=True)
class NewTrumpet:
    request_id: str
    store_id: str
    activity_id: str
    sub_group_id: str
    on_sub_group: bool
    group_level: int
    display_starts_at: datetime
    message: str
    created_by: str


@dataclass(frozen=True)
class ClaimOutcome:
    claim: Claim
    replayed: bool


@dataclass
class SweepCounts:
    red_packets_refunded: int = 0
    pools_refunded: int = 0
    coupons_expired: int = 0
    end_cards_posted: int = 0
    refunded_fen: int = 0
    ended_flash_sales: list[str] = field(default_factory=list)

    def add(self, other: SweepCounts) -> None:
        self.red_packets_refunded += other.red_packets_refunded
        self.pools_refunded += other.pools_refunded
        self.coupons_expired += other.coupons_expired
        self.end_cards_posted += other.end_cards_posted
        self.refunded_fen += other.refunded_fen
        self.ended_flash_sales += other.ended_flash_sales

    @property
    def anything(self) -> bool:
        return bool(self.red_packets_refunded or self.pools_refunded or self.coupons_expired or self.end_cards_posted)


def window_of(activity: Activity) -> domain.Window:
    return domain.Window(activity.starts_at, activity.ends_at)


def item_facts(item: Item) -> domain.ItemFacts:
    return domain.ItemFacts(Platform(item.platform), item.sku_count, item.price_min_fen, item.price_max_fen, item.stock)


def has_ended(activity: Activity, now: datetime) -> bool:
    return activity.ended_at is not None or activity.end_card_posted or now >= activity.ends_at


def claim_state(claim: Claim | Row[Any], now: datetime) -> ClaimState:
    """As read: a held prize past its expiry shows as refunded (cash) or expired (coupon) already."""
    state = ClaimState(claim.state)
    if state is ClaimState.HELD and claim.expires_at <= now:
        return ClaimState.REFUNDED if claim.kind == PrizeKind.CASH_RED_PACKET else ClaimState.EXPIRED
    return state


class CampaignsRepository:
    """The units of work of the campaigns service over one session (one transaction, one store)."""

    def __init__(self, session: AsyncSession, rules: Rules, now: datetime) -> None:
        self.session = session
        self.rules = rules
        self.now = now

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self.session.get_bind().dialect, table)

    # -- items -------------------------------------------------------------------------------

    async def item(self, store_id: str, item_id: str) -> Item:
        row = await self.session.scalar(
            select(Item)
            .where(Item.store_id == store_id, Item.item_id == item_id)
            .execution_options(populate_existing=True)
        )
        if row is None:
            raise NotFound("item", f"{store_id}/{item_id}")
        return row

    async def upsert_item(self, update_: ItemUpdate) -> tuple[Item, bool]:
        """A new item starts with its initial stock; a known item's facts change, its stock does not."""
        inserted = await self.session.scalar(
            self._insert(Item)
            .values(
                store_id=update_.store_id,
                item_id=update_.item_id,
                platform=str(update_.platform),
                sku_count=update_.sku_count,
                price_min_fen=update_.price_min_fen,
                price_max_fen=update_.price_max_fen,
                stock=update_.initial_stock,
                created_at=self.now,
                updated_at=self.now,
            )
            .on_conflict_do_nothing(index_elements=[Item.store_id, Item.item_id])
            .returning(Item.item_id)
        )
        if inserted is None:
            await self.session.execute(
                update(Item)
                .where(Item.store_id == update_.store_id, Item.item_id == update_.item_id)
                .values(
                    platform=str(update_.platform),
                    sku_count=update_.sku_count,
                    price_min_fen=update_.price_min_fen,
                    price_max_fen=update_.price_max_fen,
                    updated_at=self.now,
                )
            )
        return await self.item(update_.store_id, update_.item_id), inserted is not None

    async def restock(self, request_id: str, store_id: str, item_id: str, quantity: int) -> tuple[Item, bool]:
        """Adds stock once per request id; a concurrent duplicate waits on the key and then adds nothing.

        D2: the stock never passes ``bounds.stock``. The update adds only where
        ``stock <= bounds.stock - quantity`` (written so, the comparison itself
        cannot overflow); otherwise the restock is refused with ``STOCK_LIMIT``
        and the transaction rolls back, the restock row with it, so a retry with
        the same request id is judged afresh and nothing was written.
        """
        recorded = await self.session.scalar(
            self._insert(Restock)
            .values(store_id=store_id, request_id=request_id, item_id=item_id, quantity=quantity, created_at=self.now)
            .on_conflict_do_nothing(index_elements=[Restock.store_id, Restock.request_id])
            .returning(Restock.request_id)
        )
        if recorded is None:
            earlier = await self.session.get(Restock, (store_id, request_id), populate_existing=True)
            assert earlier is not None
            if (earlier.item_id, earlier.quantity) != (item_id, quantity):
                raise AlreadyExists(f"request_id {request_id!r} was used for another restock")
            return await self.item(store_id, item_id), True
        most = self.rules.bounds.stock
        stock = await self.session.scalar(
            update(Item)
            .where(Item.store_id == store_id, Item.item_id == item_id, Item.stock <= most - quantity)
            .values(stock=Item.stock + quantity, updated_at=self.now)
            .returning(Item.stock)
        )
        if stock is None:
            current = await self.item(store_id, item_id)  # NOT_FOUND when there is no such item
            raise RuleRefusal(domain.stock_limit_failures(current.stock, quantity, most))
        return await self.item(store_id, item_id), False

    # -- activities --------------------------------------------------------------------------

    async def activity(self, store_id: str, activity_id: str, *, share_lock: bool = False) -> Activity:
        query = select(Activity).where(Activity.store_id == store_id, Activity.activity_id == activity_id)
        if share_lock:
            query = query.with_for_update(read=True)
        row = await self.session.scalar(query.execution_options(populate_existing=True))
        if row is None:
            raise NotFound("activity", f"{store_id}/{activity_id}")
        return row

    async def activity_view(self, store_id: str, activity_id: str) -> ActivityView:
        row = await self.activity(store_id, activity_id)
        return ActivityView(row, tuple(await self._pools(store_id, activity_id)))

    async def list_activities(
        self, store_id: str, group_set_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[ActivityView], tuple[datetime, str] | None]:
        query = select(Activity).where(Activity.store_id == store_id)
        if group_set_id:
            query = query.where(Activity.group_set_id == group_set_id)
        if after is not None:
            created, last = after
            query = query.where(
                or_(Activity.created_at > created, and_(Activity.created_at == created, Activity.activity_id > last))
            )
        rows = list(
            await self.session.scalars(query.order_by(Activity.created_at, Activity.activity_id).limit(limit + 1))
        )
        more = len(rows) > limit
        rows = rows[:limit]
        pools: dict[str, list[Pool]] = {r.activity_id: [] for r in rows}
        if rows:
            for p in await self.session.scalars(
                select(Pool)
                .where(Pool.store_id == store_id, Pool.activity_id.in_(list(pools)))
                .order_by(Pool.activity_id, Pool.seq)
            ):
                pools[p.activity_id].append(p)
        views = [ActivityView(r, tuple(pools[r.activity_id])) for r in rows]
        return views, ((rows[-1].created_at, rows[-1].activity_id) if more and rows else None)

    async def running_group_buy(self, store_id: str, item_id: str) -> str | None:
        """V3: the group buy of this item running now (the earliest to end), if any."""
        return await self.session.scalar(
            select(Activity.activity_id)
            .where(
                Activity.store_id == store_id,
                Activity.item_id == item_id,
                Activity.kind == str(ActivityKind.GROUP_BUY),
                Activity.ended_at.is_(None),
                Activity.starts_at <= self.now,
                Activity.ends_at > self.now,
            )
            .order_by(Activity.ends_at, Activity.activity_id)
            .limit(1)
        )

    async def _pools(self, store_id: str, activity_id: str) -> list[Pool]:
        return list(
            await self.session.scalars(
                select(Pool)
                .where(Pool.store_id == store_id, Pool.activity_id == activity_id)
                .order_by(Pool.seq)
                .execution_options(populate_existing=True)
            )
        )

    async def _activity_by_request(self, store_id: str, request_id: str) -> Activity | None:
        return await self.session.scalar(
            select(Activity)
            .where(Activity.store_id == store_id, Activity.request_id == request_id)
            .execution_options(populate_existing=True)
        )

    async def create_activity(self, new: NewActivity) -> tuple[ActivityView, int, bool]:
        """M1 for flash sales, then M11 under the group-set's slot lock; returns (view, at once, created)."""
        if new.request_id:
            earlier = await self._activity_by_request(new.store_id, new.request_id)
            if earlier is not None:
                return await self._replayed_activity(earlier, new), 0, False
        failures: list[Failure] = []
        if new.kind in (ActivityKind.FLASH_SALE, ActivityKind.GROUP_BUY):
            item = await self.item(new.store_id, new.item_id)
            if new.kind is ActivityKind.FLASH_SALE:
                failures += domain.flash_sale_item_failures(item_facts(item))
        await self.session.execute(
            self._insert(GroupSlot)
            .values(store_id=new.store_id, group_set_id=new.group_set_id, created_at=self.now)
            .on_conflict_do_nothing(index_elements=[GroupSlot.store_id, GroupSlot.group_set_id])
        )
        await self.session.execute(
            select(GroupSlot.store_id)
            .where(GroupSlot.store_id == new.store_id, GroupSlot.group_set_id == new.group_set_id)
            .with_for_update()
        )
        if new.request_id:  # a concurrent replay may have committed while we waited for the lock
            earlier = await self._activity_by_request(new.store_id, new.request_id)
            if earlier is not None:
                return await self._replayed_activity(earlier, new), 0, False
        counted = domain.Window(max(new.window.starts_at, self.now), new.window.ends_at)
        rows = await self.session.execute(
            select(Activity.starts_at, Activity.ends_at).where(
                Activity.store_id == new.store_id,
                Activity.group_set_id == new.group_set_id,
                Activity.ended_at.is_(None),
                Activity.ends_at > counted.starts_at,
                Activity.starts_at < counted.ends_at,
            )
        )
        cap_failures, at_once = domain.activity_cap_failures(
            self.rules, [domain.Window(r.starts_at, r.ends_at) for r in rows], counted
        )
        failures += cap_failures
        if failures:
            raise RuleRefusal(failures)
        row = Activity(
            store_id=new.store_id,
            activity_id=new_id("act"),
            group_set_id=new.group_set_id,
            kind=str(new.kind),
            title=new.title,
            starts_at=new.window.starts_at,
            ends_at=new.window.ends_at,
            ended_at=None,
            created_by=new.created_by,
            created_at=self.now,
            request_id=new.request_id or None,
            item_id=new.item_id or None,
            price_fen=new.price_fen or None,
            group_size=new.group_size or None,
            options=list(new.options) or None,
            end_card_posted=False,
        )
        self.session.add(row)
        pools = [
            Pool(
                store_id=new.store_id,
                pool_id=new_id("pool"),
                activity_id=row.activity_id,
                seq=i + 1,
                kind=str(p.kind),
                value_fen=p.value_fen,
                count=p.count,
                remaining=p.count,
                per_user_limit=p.per_user_limit,
                expires_at=p.expires_at,
                remainder_refunded=False,
            )
            for i, p in enumerate(new.pools)
        ]
        self.session.add_all(pools)
        await self.session.flush()
        return ActivityView(row, tuple(pools)), at_once, True

    async def _replayed_activity(self, earlier: Activity, new: NewActivity) -> ActivityView:
        if (earlier.group_set_id, earlier.kind) != (new.group_set_id, str(new.kind)):
            raise AlreadyExists(f"request_id {new.request_id!r} was used for another activity")
        return ActivityView(earlier, tuple(await self._pools(earlier.store_id, earlier.activity_id)))

    async def end_activity(self, store_id: str, activity_id: str) -> tuple[ActivityView, EndCard | None, bool]:
        """Ends it now (a no-op when it already ended); a flash sale's end card is posted once (M6)."""
        row = await self.session.scalar(
            select(Activity)
            .where(Activity.store_id == store_id, Activity.activity_id == activity_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if row is None:
            raise NotFound("activity", f"{store_id}/{activity_id}")
        if row.ended_at is None and self.now < row.ends_at:
            row.ended_at = self.now
        card, posted = None, False
        if row.kind == ActivityKind.FLASH_SALE:
            card, posted = await self._post_end_card(row)
        await self.session.flush()
        return ActivityView(row, tuple(await self._pools(store_id, activity_id))), card, posted

    async def _post_end_card(self, sale: Activity) -> tuple[EndCard, bool]:
        """M6 for a locked, ended flash sale: the card with the units sold, once; the next seq of the store."""
        if sale.end_card_posted:
            card = await self.session.scalar(
                select(EndCard).where(EndCard.store_id == sale.store_id, EndCard.activity_id == sale.activity_id)
            )
            assert card is not None
            return card, False
        units_high, units_low, count = (
            await self.session.execute(
                select(*split_sum(Purchase.quantity), func.count()).where(
                    Purchase.store_id == sale.store_id,
                    Purchase.flash_sale_id == sale.activity_id,
                    Purchase.cancelled_at.is_(None),
                )
            )
        ).one()
        units = saturated(joined_sum(units_high, units_low))  # the sale's units over any number of restocks
        await self.session.execute(
            self._insert(StoreStream)
            .values(store_id=sale.store_id, last_seq=0)
            .on_conflict_do_nothing(index_elements=[StoreStream.store_id])
        )
        seq = await self.session.scalar(
            update(StoreStream)
            .where(StoreStream.store_id == sale.store_id)
            .values(last_seq=StoreStream.last_seq + 1)
            .returning(StoreStream.last_seq)
        )
        card = EndCard(
            store_id=sale.store_id,
            seq=int(seq or 0),
            activity_id=sale.activity_id,
            group_set_id=sale.group_set_id,
            title=sale.title,
            item_id=sale.item_id or "",
            units_sold=units,
            purchases=saturated(int(count), MAX_INT32),
            ended_at=sale.ended_at or sale.ends_at,
            posted_at=self.now,
        )
        self.session.add(card)
        sale.end_card_posted = True
        await self.session.flush()
        return card, True

    async def end_card(self, store_id: str, activity_id: str) -> EndCard | None:
        return await self.session.scalar(
            select(EndCard).where(EndCard.store_id == store_id, EndCard.activity_id == activity_id)
        )

    async def list_end_cards(self, store_id: str, group_set_id: str, after_seq: int, limit: int) -> list[EndCard]:
        query = select(EndCard).where(EndCard.store_id == store_id, EndCard.seq > after_seq)
        if group_set_id:
            query = query.where(EndCard.group_set_id == group_set_id)
        return list(await self.session.scalars(query.order_by(EndCard.seq).limit(limit)))

    async def flash_sale_results(
        self, store_id: str, activity_id: str
    ) -> tuple[ActivityView, dict[str, int], EndCard | None]:
        view = await self.activity_view(store_id, activity_id)
        if view.activity.kind != ActivityKind.FLASH_SALE:
            raise InvalidArgument.one("activity_id", f"{activity_id} is a {view.activity.kind}, not a flash sale")
        # Units and revenue are totals over every purchase, whose number restocks leave unbounded (one
        # purchase's total fits: OVERFLOW_GUARDS): summed exactly, reported saturated (D2).
        units_high, units_low, count, buyers, revenue_high, revenue_low = (
            await self.session.execute(
                select(
                    *split_sum(Purchase.quantity),
                    func.count(),
                    func.count(func.distinct(Purchase.consumer_id)),
                    *split_sum(Purchase.total_fen),
                ).where(
                    Purchase.store_id == store_id,
                    Purchase.flash_sale_id == activity_id,
                    Purchase.cancelled_at.is_(None),
                )
            )
        ).one()
        item = await self.item(store_id, view.activity.item_id or "")
        figures = {
            "units_sold": saturated(joined_sum(units_high, units_low)),
            "purchases": saturated(int(count), MAX_INT32),
            "buyers": saturated(int(buyers), MAX_INT32),
            "revenue_fen": saturated(joined_sum(revenue_high, revenue_low)),
            "stock_left": item.stock,
        }
        return view, figures, await self.end_card(store_id, activity_id)

    # -- trumpet (M12) -----------------------------------------------------------------------

    async def create_trumpet(self, new: NewTrumpet) -> tuple[Trumpet, bool]:
        if new.request_id:
            earlier = await self.session.scalar(
                select(Trumpet).where(Trumpet.store_id == new.store_id, Trumpet.request_id == new.request_id)
            )
            if earlier is not None:
                if earlier.activity_id != new.activity_id:
                    raise AlreadyExists(f"request_id {new.request_id!r} was used for another trumpet")
                return earlier, True
        activity = await self.activity(new.store_id, new.activity_id)
        failures = domain.trumpet_failures(
            self.rules,
            group_level=new.group_level,
            on_sub_group=new.on_sub_group,
            activity=window_of(activity),
            activity_ended_at=activity.ended_at,
            display_starts_at=new.display_starts_at,
        )
        if failures:
            raise RuleRefusal(failures)
        row = Trumpet(
            store_id=new.store_id,
            trumpet_id=new_id("tr"),
            activity_id=activity.activity_id,
            group_set_id=activity.group_set_id,
            sub_group_id=new.sub_group_id,
            message=new.message,
            display_starts_at=new.display_starts_at,
            created_by=new.created_by,
            request_id=new.request_id or None,
            created_at=self.now,
        )
        self.session.add(row)
        await self.session.flush()
        return row, False

    # -- purchases (M2; PriceOrder and Purchase are in ``orders``) ------------------------------

    async def get_purchase(self, store_id: str, purchase_id: str) -> Purchase:
        row = await self.session.get(Purchase, (store_id, purchase_id), populate_existing=True)
        if row is None:
            raise NotFound("purchase", f"{store_id}/{purchase_id}")
        return row

    async def list_sales(
        self,
        store_id: str,
        *,
        item_id: str,
        flash_sale_id: str,
        consumer_id: str,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> tuple[list[Purchase], tuple[datetime, str] | None]:
        query = select(Purchase).where(Purchase.store_id == store_id)
        if item_id:
            query = query.where(Purchase.item_id == item_id)
        if flash_sale_id:
            query = query.where(Purchase.flash_sale_id == flash_sale_id)
        if consumer_id:
            query = query.where(Purchase.consumer_id == consumer_id)
        if after is not None:
            created, last = after
            query = query.where(
                or_(Purchase.created_at > created, and_(Purchase.created_at == created, Purchase.purchase_id > last))
            )
        rows = list(
            await self.session.scalars(query.order_by(Purchase.created_at, Purchase.purchase_id).limit(limit + 1))
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, ((rows[-1].created_at, rows[-1].purchase_id) if more and rows else None)

    async def cancel_purchase(self, request_id: str, store_id: str, purchase_id: str) -> tuple[Purchase, int, bool]:
        """The quantity goes back to stock and the prizes to the wallet, once."""
        row = await self.session.scalar(
            select(Purchase)
            .where(Purchase.store_id == store_id, Purchase.purchase_id == purchase_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if row is None:
            raise NotFound("purchase", f"{store_id}/{purchase_id}")
        if row.cancelled_at is not None:
            return row, (await self.item(store_id, row.item_id)).stock, True
        row.cancelled_at = self.now
        row.cancel_request_id = request_id
        # The quantity goes back even past ``bounds.stock`` (restocks since the sale may have filled it): the
        # units exist. Only the column's own ceiling (``STOCK_CEILING``, far above any reachable stock) refuses.
        stock = await self.session.scalar(
            update(Item)
            .where(Item.store_id == store_id, Item.item_id == row.item_id, Item.stock <= STOCK_CEILING - row.quantity)
            .values(stock=Item.stock + row.quantity, updated_at=self.now)
            .returning(Item.stock)
        )
        if stock is None:
            current = await self.item(store_id, row.item_id)
            raise RuleRefusal(domain.stock_limit_failures(current.stock, row.quantity, STOCK_CEILING))
        ids = [*row.cash_red_packet_ids, *row.store_coupon_ids]
        if ids:
            await self.session.execute(
                update(Claim)
                .where(Claim.store_id == store_id, Claim.claim_id.in_(ids), Claim.used_purchase_id == purchase_id)
                .values(state=str(ClaimState.HELD), used_purchase_id=None, settled_at=None)
                .execution_options(synchronize_session=False)
            )
        await self.session.flush()
        return row, int(stock or 0), False

    # -- claims (M7, M10, M13) ---------------------------------------------------------------

    async def claim(
        self,
        request_id: str,
        store_id: str,
        activity_id: str,
        pool_id: str,
        consumer_id: str,
        *,
        group_member: bool,
    ) -> ClaimOutcome:
        """M10 under the consumer's wallet lock; the prize from a pool with a conditional decrement."""
        earlier = await self._claim_by_request(store_id, request_id)
        if earlier is not None:
            return self._replayed_claim(earlier, consumer_id, activity_id)
        activity = await self.activity(store_id, activity_id)
        kind = ActivityKind(activity.kind)
        if kind not in domain.PRIZE_ACTIVITIES:
            raise InvalidArgument.one("activity_id", f"{activity_id} is a {kind}; it has no prizes to claim")
        failures = domain.membership_failures(kind, group_member)
        failures += domain.running_failures(kind, window_of(activity), activity.ended_at, self.now)
        pools = await self._pools(store_id, activity_id)
        if pool_id:
            pools = [p for p in pools if p.pool_id == pool_id]
            if not pools:
                raise NotFound("pool", f"{activity_id}/{pool_id}")
        if failures:
            raise RuleRefusal(failures)
        await self.session.execute(
            self._insert(Wallet)
            .values(store_id=store_id, consumer_id=consumer_id, created_at=self.now)
            .on_conflict_do_nothing(index_elements=[Wallet.store_id, Wallet.consumer_id])
        )
        await self.session.execute(
            select(Wallet.store_id)
            .where(Wallet.store_id == store_id, Wallet.consumer_id == consumer_id)
            .with_for_update()
        )
        earlier = await self._claim_by_request(store_id, request_id)  # a racing retry committed while we waited
        if earlier is not None:
            return self._replayed_claim(earlier, consumer_id, activity_id)
        held = await self._held(store_id, consumer_id)
        taken = dict(
            (
                await self.session.execute(
                    select(Claim.pool_id, func.count())
                    .where(
                        Claim.store_id == store_id,
                        Claim.consumer_id == consumer_id,
                        Claim.activity_id == activity_id,
                    )
                    .group_by(Claim.pool_id)
                )
            ).all()
        )
        standings = [
            domain.PoolStanding(p.pool_id, p.remaining, p.per_user_limit, int(taken.get(p.pool_id, 0))) for p in pools
        ]
        failures = domain.claim_failures(self.rules, held, standings)
        if failures:
            raise RuleRefusal(failures)
        candidates = domain.claimable(standings)
        random.shuffle(candidates)  # the fountain sprays: any pool with prizes left
        by_id = {p.pool_id: p for p in pools}
        for candidate in candidates:
            took = await self.session.scalar(
                update(Pool)
                .where(
                    Pool.store_id == store_id,
                    Pool.pool_id == candidate,
                    Pool.remaining > 0,
                    Pool.remainder_refunded.is_(False),
                )
                .values(remaining=Pool.remaining - 1)
                .returning(Pool.remaining)
            )
            if took is not None:
                pool = by_id[candidate]
                row = Claim(
                    store_id=store_id,
                    claim_id=new_id("clm"),
                    request_id=request_id,
                    activity_id=activity_id,
                    pool_id=pool.pool_id,
                    consumer_id=consumer_id,
                    kind=pool.kind,
                    value_fen=pool.value_fen,
                    state=str(ClaimState.HELD),
                    expires_at=pool.expires_at,
                    used_purchase_id=None,
                    claimed_at=self.now,
                    settled_at=None,
                )
                self.session.add(row)
                await self.session.flush()
                return ClaimOutcome(row, replayed=False)
        raise RuleRefusal([Failure("M7", "NO_PRIZES_LEFT", "every prize has been claimed", {"remaining": "0"})])

    async def _claim_by_request(self, store_id: str, request_id: str) -> Claim | None:
        return await self.session.scalar(
            select(Claim)
            .where(Claim.store_id == store_id, Claim.request_id == request_id)
            .execution_options(populate_existing=True)
        )

    @staticmethod
    def _replayed_claim(earlier: Claim, consumer_id: str, activity_id: str) -> ClaimOutcome:
        if (earlier.consumer_id, earlier.activity_id) != (consumer_id, activity_id):
            raise AlreadyExists(f"request_id {earlier.request_id!r} was used for another claim")
        return ClaimOutcome(earlier, replayed=True)

    async def _held(self, store_id: str, consumer_id: str) -> int:
        return int(
            await self.session.scalar(
                select(func.count()).where(
                    Claim.store_id == store_id,
                    Claim.consumer_id == consumer_id,
                    Claim.state == str(ClaimState.HELD),
                    Claim.expires_at > self.now,
                )
            )
            or 0
        )

    async def wallet(
        self, store_id: str, consumer_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[Claim], tuple[datetime, str] | None, int]:
        query = select(Claim).where(Claim.store_id == store_id, Claim.consumer_id == consumer_id)
        if after is not None:
            claimed, last = after
            query = query.where(
                or_(Claim.claimed_at > claimed, and_(Claim.claimed_at == claimed, Claim.claim_id > last))
            )
        rows = list(await self.session.scalars(query.order_by(Claim.claimed_at, Claim.claim_id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = (rows[-1].claimed_at, rows[-1].claim_id) if more and rows else None
        return rows, cursor, await self._held(store_id, consumer_id)

    # -- voting, check-in (M13) --------------------------------------------------------------

    async def _interaction(self, store_id: str, activity_id: str, kind: ActivityKind, group_member: bool) -> Activity:
        activity = await self.activity(store_id, activity_id)
        if activity.kind != kind:
            raise InvalidArgument.one("activity_id", f"{activity_id} is a {activity.kind}, not a {kind}")
        failures = domain.membership_failures(kind, group_member)
        failures += domain.running_failures(kind, window_of(activity), activity.ended_at, self.now)
        if failures:
            raise RuleRefusal(failures)
        return activity

    async def vote(
        self, store_id: str, activity_id: str, consumer_id: str, option_index: int, *, group_member: bool
    ) -> tuple[list[int], int]:
        activity = await self._interaction(store_id, activity_id, ActivityKind.VOTING, group_member)
        options = activity.options or []
        if not 0 <= option_index < len(options):
            raise InvalidArgument.one("option_index", f"must be between 0 and {len(options) - 1}, got {option_index}")
        await self.session.execute(
            self._insert(Vote)
            .values(
                store_id=store_id,
                activity_id=activity_id,
                consumer_id=consumer_id,
                option_index=option_index,
                created_at=self.now,
            )
            .on_conflict_do_nothing(index_elements=[Vote.store_id, Vote.activity_id, Vote.consumer_id])
        )
        mine = await self.session.scalar(
            select(Vote.option_index).where(
                Vote.store_id == store_id, Vote.activity_id == activity_id, Vote.consumer_id == consumer_id
            )
        )
        if mine != option_index:
            raise RuleRefusal(
                [
                    Failure(
                        "M13",
                        "ALREADY_VOTED",
                        f"one vote per member; yours is option {mine}",
                        {"option_index": str(mine)},
                    )
                ]
            )
        counts = dict(
            (
                await self.session.execute(
                    select(Vote.option_index, func.count())
                    .where(Vote.store_id == store_id, Vote.activity_id == activity_id)
                    .group_by(Vote.option_index)
                )
            ).all()
        )
        return [int(counts.get(i, 0)) for i in range(len(options))], option_index

    async def check_in(
        self, store_id: str, activity_id: str, consumer_id: str, *, group_member: bool
    ) -> tuple[str, int, bool]:
        await self._interaction(store_id, activity_id, ActivityKind.CHECK_IN, group_member)
        day = domain.market_day(self.rules, self.now)
        inserted = await self.session.scalar(
            self._insert(CheckIn)
            .values(store_id=store_id, activity_id=activity_id, consumer_id=consumer_id, day=day, created_at=self.now)
            .on_conflict_do_nothing(
                index_elements=[CheckIn.store_id, CheckIn.activity_id, CheckIn.consumer_id, CheckIn.day]
            )
            .returning(CheckIn.day)
        )
        days = await self.session.scalar(
            select(func.count()).where(
                CheckIn.store_id == store_id, CheckIn.activity_id == activity_id, CheckIn.consumer_id == consumer_id
            )
        )
        return day, int(days or 0), inserted is None

    # -- refunds and the expiry job (M6, M9) -------------------------------------------------

    async def list_refunds(
        self, store_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[Refund], tuple[datetime, str] | None, int]:
        query = select(Refund).where(Refund.store_id == store_id)
        if after is not None:
            created, last = after
            query = query.where(
                or_(Refund.created_at > created, and_(Refund.created_at == created, Refund.refund_id > last))
            )
        rows = list(await self.session.scalars(query.order_by(Refund.created_at, Refund.refund_id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        # The store's ledger over the years: no bound on its rows, so summed exactly (``split_sum``: SQLite's
        # sum() would raise past int64); the caller reports it saturated (D2).
        high, low = (
            await self.session.execute(select(*split_sum(Refund.amount_fen)).where(Refund.store_id == store_id))
        ).one()
        return rows, ((rows[-1].created_at, rows[-1].refund_id) if more and rows else None), joined_sum(high, low)

    async def stores_with_expired_prizes(self, limit: int, skip: Collection[str] = ()) -> list[str]:
        """Read without locks: which stores the job visits, one transaction each.

        ``skip`` are the stores the job has set aside after a failure (D3): left out
        here, so however many they are they never fill the ``limit`` in place of others.
        In store order, so each pass goes on where the last left off among the rest.
        """
        query = select(Claim.store_id).where(Claim.state == str(ClaimState.HELD), Claim.expires_at <= self.now)
        if skip:
            query = query.where(Claim.store_id.not_in(list(skip)))
        return list(await self.session.scalars(query.distinct().order_by(Claim.store_id).limit(limit)))

    async def settle_expired_prizes(self, store_id: str, limit: int) -> SweepCounts:
        """M9: each held prize past expiry, claimed with SKIP LOCKED, settled once; cash goes to the ledger."""
        counts = SweepCounts()
        rows = list(
            await self.session.scalars(
                select(Claim)
                .where(Claim.store_id == store_id, Claim.state == str(ClaimState.HELD), Claim.expires_at <= self.now)
                .order_by(Claim.claim_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
        )
        for claim in rows:
            if claim.kind == PrizeKind.CASH_RED_PACKET:
                claim.state = str(ClaimState.REFUNDED)
                if await self._ledger(
                    claim.store_id, REFUND_EXPIRED_RED_PACKET, claim.claim_id, claim.activity_id, claim.value_fen
                ):
                    counts.red_packets_refunded += 1
                    counts.refunded_fen += claim.value_fen
            else:
                claim.state = str(ClaimState.EXPIRED)
                counts.coupons_expired += 1
            claim.settled_at = self.now
        await self.session.flush()
        return counts

    def _pools_due(self) -> Any:
        return and_(
            Pool.store_id == Activity.store_id,
            Pool.activity_id == Activity.activity_id,
            Pool.kind == str(PrizeKind.CASH_RED_PACKET),
            Pool.remaining > 0,
            Pool.remainder_refunded.is_(False),
            or_(Activity.ended_at.is_not(None), Activity.ends_at <= self.now),
        )

    async def stores_with_unclaimed_pools(self, limit: int, skip: Collection[str] = ()) -> list[str]:
        """The stores with cash left in pools of ended activities, but those set aside (``skip``, D3)."""
        query = select(Pool.store_id).select_from(Pool).join(Activity, self._pools_due())
        if skip:
            query = query.where(Pool.store_id.not_in(list(skip)))
        return list(await self.session.scalars(query.distinct().order_by(Pool.store_id).limit(limit)))

    async def refund_unclaimed_pools(self, store_id: str, limit: int) -> SweepCounts:
        """M9: the cash nobody claimed before the activity ended goes back once per pool."""
        counts = SweepCounts()
        rows = list(
            await self.session.scalars(
                select(Pool)
                .join(Activity, self._pools_due())
                .where(Pool.store_id == store_id)
                .order_by(Pool.pool_id)
                .limit(limit)
                .with_for_update(of=Pool, skip_locked=True)
                .execution_options(populate_existing=True)
            )
        )
        for pool in rows:
            # Fits int64 for any pool the service accepted: prizes left ≤ bounds.pool_prizes and value ≤
            # bounds.prize_fen (OVERFLOW_GUARDS, "a pool's value"). A row written past those bounds fails
            # here, in its own store's transaction, which the job sets aside (D3).
            amount = pool.remaining * pool.value_fen
            pool.remaining = 0
            pool.remainder_refunded = True
            if await self._ledger(pool.store_id, REFUND_UNCLAIMED_POOL, pool.pool_id, pool.activity_id, amount):
                counts.pools_refunded += 1
                counts.refunded_fen += amount
        await self.session.flush()
        return counts

    async def _ledger(self, store_id: str, source: str, source_id: str, activity_id: str, amount: int) -> bool:
        """One ledger entry per source; False when it was already there (nothing is refunded twice)."""
        inserted = await self.session.scalar(
            self._insert(Refund)
            .values(
                store_id=store_id,
                refund_id=new_id("rf"),
                source=source,
                source_id=source_id,
                activity_id=activity_id,
                amount_fen=amount,
                created_at=self.now,
            )
            .on_conflict_do_nothing(index_elements=[Refund.store_id, Refund.source, Refund.source_id])
            .returning(Refund.refund_id)
        )
        return inserted is not None

    def _end_cards_due(self) -> Any:
        return and_(
            Activity.kind == str(ActivityKind.FLASH_SALE),
            Activity.end_card_posted.is_(False),
            or_(Activity.ended_at.is_not(None), Activity.ends_at <= self.now),
        )

    async def stores_with_end_cards_due(self, limit: int, skip: Collection[str] = ()) -> list[str]:
        """The stores with ended flash sales whose card is not posted, but those set aside (``skip``, D3)."""
        query = select(Activity.store_id).where(self._end_cards_due())
        if skip:
            query = query.where(Activity.store_id.not_in(list(skip)))
        return list(await self.session.scalars(query.distinct().order_by(Activity.store_id).limit(limit)))

    async def post_due_end_cards(self, store_id: str, limit: int) -> SweepCounts:
        counts = SweepCounts()
        rows = list(
            await self.session.scalars(
                select(Activity)
                .where(Activity.store_id == store_id, self._end_cards_due())
                .order_by(Activity.ends_at, Activity.activity_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
        )
        for sale in rows:
            _, posted = await self._post_end_card(sale)
            if posted:
                counts.end_cards_posted += 1
                counts.ended_flash_sales.append(sale.activity_id)
        return counts

    async def activities_still_running(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (store, activity) are running now (for the stock gauges)."""
        running: set[tuple[str, str]] = set()
        for store_id, activity_id in keys:
            row = await self.session.get(Activity, (store_id, activity_id), populate_existing=True)
            if row is not None and not has_ended(row, self.now):
                running.add((store_id, activity_id))
        return running
