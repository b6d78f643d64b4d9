"""The campaigns service's unit of work: one transaction, one store, and the rows every aggregate reads.

Persistence is split by aggregate, each a ``UnitOfWork`` over the caller's
session: ``items`` (items, stock and purchases), ``activities`` (activities
and trumpets), ``end_cards`` (M6), ``prizes`` (pools, claims and wallets),
``interactions`` (votes and check-ins) and ``refunds`` (the ledger and the
expiry job's sweeps); the order path is ``orders`` (prebuilt Core
statements). Every method runs inside the caller's transaction (one per RPC,
one store).
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

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import rules as domain
from services.campaigns.models import Activity, Claim, Item, Pool
from services.campaigns.rules import ClaimState, Platform, PrizeKind
from services.common.errors import NotFound
from services.common.inserts import dialect_insert
from services.common.rules import Rules

U = TypeVar("U", bound="UnitOfWork")
R = TypeVar("R")


class Lock(enum.Enum):
    """How a read row is locked until the transaction ends (PostgreSQL; SQLite has one writer at a time)."""

    NONE = "none"
    SHARE = "share"  # FOR SHARE: others may read and share it, not change it
    UPDATE = "update"  # FOR UPDATE: this transaction alone changes it


@dataclass(frozen=True)
class ActivityView:
    activity: Activity
    pools: tuple[Pool, ...]


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


class UnitOfWork:
    """One transaction of the campaigns service (one store): the session, the rules, and "now"."""

    def __init__(self, session: AsyncSession, rules: Rules, now: datetime) -> None:
        self.session = session
        self.rules = rules
        self.now = now

    def along(self, unit: type[U]) -> U:
        """Another aggregate's unit of work in this same transaction."""
        return unit(self.session, self.rules, self.now)

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self.session.get_bind().dialect, table)

    # -- rows every aggregate reads ----------------------------------------------------------

    async def found(self, query: Select[tuple[R]], what: str, key: str) -> R:
        """The row ``query`` finds, read afresh (``populate_existing``: a lock taken now sees the latest), or
        NOT_FOUND naming ``what`` and ``key``."""
        row = await self.session.scalar(query.execution_options(populate_existing=True))
        if row is None:
            raise NotFound(what, key)
        return row

    async def item(self, store_id: str, item_id: str) -> Item:
        query = select(Item).where(Item.store_id == store_id, Item.item_id == item_id)
        return await self.found(query, "item", f"{store_id}/{item_id}")

    async def activity(self, store_id: str, activity_id: str, *, lock: Lock = Lock.NONE) -> Activity:
        query = select(Activity).where(Activity.store_id == store_id, Activity.activity_id == activity_id)
        if lock is not Lock.NONE:
            query = query.with_for_update(read=lock is Lock.SHARE)
        return await self.found(query, "activity", f"{store_id}/{activity_id}")

    async def pools(self, store_id: str, activity_id: str) -> list[Pool]:
        return list(
            await self.session.scalars(
                select(Pool)
                .where(Pool.store_id == store_id, Pool.activity_id == activity_id)
                .order_by(Pool.seq)
                .execution_options(populate_existing=True)
            )
        )

    async def activity_view(self, store_id: str, activity_id: str) -> ActivityView:
        row = await self.activity(store_id, activity_id)
        return ActivityView(row, tuple(await self.pools(store_id, activity_id)))
