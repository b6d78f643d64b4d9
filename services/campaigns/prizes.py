"""Prizes: claims from a fountain's or lucky red packet's pools into the consumer's wallet at the store (M7, M10).

A claim locks the consumer's wallet row at the store, so the wallet size and
the per-user limits are counted under the lock; the pool's prizes go with a
conditional ``UPDATE pools SET remaining = remaining - 1 WHERE remaining > 0``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update

from services.campaigns import rules as domain
from services.campaigns.kinds import ActivityKind
from services.campaigns.models import Claim, Pool, Wallet
from services.campaigns.repository import UnitOfWork, window_of
from services.campaigns.rules import ClaimState
from services.common.errors import Failure, InvalidArgument, NotFound, RuleRefusal
from services.common.ids import new_id
from services.common.keysets import keyset_page
from services.common.request_ids import check_same_request, request_fingerprint


@dataclass(frozen=True)
class ClaimOutcome:
    claim: Claim
    replayed: bool


class Prizes(UnitOfWork):
    """Claims and wallets of one store."""

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
        fingerprint = request_fingerprint(consumer_id=consumer_id, activity_id=activity_id, pool_id=pool_id)
        earlier = await self._claim_by_request(store_id, request_id)
        if earlier is not None:
            return self._replayed_claim(earlier, fingerprint)
        activity = await self.activity(store_id, activity_id)
        kind = ActivityKind(activity.kind)
        if kind not in domain.PRIZE_ACTIVITIES:
            raise InvalidArgument.one("activity_id", f"{activity_id} is a {kind}; it has no prizes to claim")
        failures = domain.membership_failures(kind, group_member)
        failures += domain.running_failures(kind, window_of(activity), activity.ended_at, self.now)
        pools = await self.pools(store_id, activity_id)
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
            return self._replayed_claim(earlier, fingerprint)
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
                    request_fingerprint=fingerprint,
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
    def _replayed_claim(earlier: Claim, fingerprint: str) -> ClaimOutcome:
        check_same_request(earlier.request_id, earlier.request_fingerprint, fingerprint, "claim")
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
        rows, cursor = await keyset_page(self.session, query, Claim.claimed_at, Claim.claim_id, after, limit)
        return rows, cursor, await self._held(store_id, consumer_id)
