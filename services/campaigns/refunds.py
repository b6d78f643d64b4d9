"""The refund ledger (M9) and the expiry job's sweeps of one store: expired prizes, unclaimed pools, due end cards.

The job claims rows with ``FOR UPDATE SKIP LOCKED`` and changes each row's
state only from "held"; the ledger's unique ``(store_id, source, source_id)``
refunds a packet or a pool at most once, and an end card is unique per
activity, so replicas running the job at once settle everything once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select

from services.campaigns.end_cards import EndCards
from services.campaigns.kinds import kinds_where
from services.campaigns.models import Activity, Claim, Pool, Refund
from services.campaigns.repository import UnitOfWork
from services.campaigns.rules import ClaimState, PrizeKind
from services.common.bounds import joined_sum, split_sum
from services.common.ids import new_id
from services.common.keysets import keyset_page

REFUND_EXPIRED_RED_PACKET = "expired_red_packet"
REFUND_UNCLAIMED_POOL = "unclaimed_pool"

# M6: the kinds whose end card the job posts when they end.
END_CARD_KINDS = sorted(kinds_where(lambda d: d.end_card))


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


class Refunds(UnitOfWork):
    """The ledger and the expiry sweeps of one store."""

    async def list_refunds(
        self, store_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[Refund], tuple[datetime, str] | None, int]:
        query = select(Refund).where(Refund.store_id == store_id)
        rows, cursor = await keyset_page(self.session, query, Refund.created_at, Refund.refund_id, after, limit)
        # The store's ledger over the years: no bound on its rows, so summed exactly (``split_sum``: SQLite's
        # sum() would raise past int64); the caller reports it saturated (D2).
        high, low = (
            await self.session.execute(select(*split_sum(Refund.amount_fen)).where(Refund.store_id == store_id))
        ).one()
        return rows, cursor, joined_sum(high, low)

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
            Activity.kind.in_([str(kind) for kind in END_CARD_KINDS]),
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
            _, posted = await self.along(EndCards).post(sale)
            if posted:
                counts.end_cards_posted += 1
                counts.ended_flash_sales.append(sale.activity_id)
        return counts
