"""The expiry job: refunds unused cash (SPEC M9) and posts end cards (M6).

It runs inside every replica on a timer (``QUN_JOB_INTERVAL_SECONDS``) and
on demand (``RunExpiry``). Running it in several replicas at once is safe and
changes nothing twice: each pass visits the stores with due work (read
without locks), then settles each store in its own transaction, claiming the
due rows with ``FOR UPDATE SKIP LOCKED`` (a row another replica is settling is
skipped, not waited for), and every settlement is a state change guarded by
the row's state plus a ledger row whose unique key admits one refund per
packet or pool and one end card per flash sale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.campaigns import metrics
from services.campaigns.repository import CampaignsRepository, SweepCounts
from services.common.clock import Clock
from services.common.db import Database
from services.common.rules import Rules

log = logging.getLogger("qun.campaigns.expiry")

STORES_PER_PASS = 100
ROWS_PER_STORE = 200
MAX_PASSES = 50

Finder = Callable[[CampaignsRepository, int], Awaitable[list[str]]]
Settler = Callable[[CampaignsRepository, str, int], Awaitable[SweepCounts]]

STEPS: tuple[tuple[str, Finder, Settler], ...] = (
    ("expired_prizes", CampaignsRepository.stores_with_expired_prizes, CampaignsRepository.settle_expired_prizes),
    ("unclaimed_pools", CampaignsRepository.stores_with_unclaimed_pools, CampaignsRepository.refund_unclaimed_pools),
    ("end_cards", CampaignsRepository.stores_with_end_cards_due, CampaignsRepository.post_due_end_cards),
)


class ExpiryJob:
    def __init__(self, db: Database, rules: Rules, clock: Clock) -> None:
        self.db = db
        self.rules = rules
        self.clock = clock

    async def run_once(self) -> SweepCounts:
        """One sweep at the clock's now; returns what this replica settled."""
        now = self.clock.now()
        total = SweepCounts()
        for _name, find, settle in STEPS:
            for _ in range(MAX_PASSES):
                async with self.db.transaction() as session:
                    stores = await find(CampaignsRepository(session, self.rules, now), STORES_PER_PASS)
                if not stores:
                    break
                progress = False
                for store_id in stores:
                    async with self.db.transaction() as session:
                        counts = await settle(CampaignsRepository(session, self.rules, now), store_id, ROWS_PER_STORE)
                    total.add(counts)
                    progress = progress or counts.anything
                if not progress:  # what is left is being settled by another replica right now
                    break
        metrics.swept(total)
        await self._forget_ended_flash_sales(now)
        return total

    async def _forget_ended_flash_sales(self, now: datetime) -> None:
        """Stock gauges of sales that ended, also those another replica posted the end card of."""
        tracked = metrics.tracked_flash_sales()
        if not tracked:
            return
        async with self.db.transaction() as session:
            running = await CampaignsRepository(session, self.rules, now).activities_still_running(tracked)
        for store_id, activity_id in tracked:
            if (store_id, activity_id) not in running:
                metrics.forget_flash_sale(activity_id)

    async def run_every(self, seconds: float) -> None:
        """The replica's timer: a failed sweep is logged and the next one tries again."""
        while True:
            await asyncio.sleep(seconds)
            try:
                counts = await self.run_once()
                if counts.anything:
                    log.info(
                        "expiry sweep",
                        extra={
                            "fields": {
                                "red_packets_refunded": counts.red_packets_refunded,
                                "pools_refunded": counts.pools_refunded,
                                "coupons_expired": counts.coupons_expired,
                                "end_cards_posted": counts.end_cards_posted,
                            }
                        },
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiry sweep failed")
