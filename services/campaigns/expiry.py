"""The expiry job: refunds unused cash (SPEC M9) and posts end cards (M6), one store at a time (D3).

It runs inside every replica on a timer (``QUN_JOB_INTERVAL_SECONDS``) and
on demand (``RunExpiry``). Running it in several replicas at once is safe and
changes nothing twice: each pass visits the stores with due work (read
without locks), then settles each store in its own transaction, claiming the
due rows with ``FOR UPDATE SKIP LOCKED`` (a row another replica is settling is
skipped, not waited for), and every settlement is a state change guarded by
the row's state plus a ledger row whose unique key admits one refund per
packet or pool and one end card per flash sale.

One store's data never stops the others (D3): each step (``expired_prizes``,
``unclaimed_pools``, ``end_cards``) settles its stores through
``services.common.jobs.settle_stores`` with a ``StoreBackoff`` of its own. A
store whose settlement fails is rolled back (nothing of it is written), logged,
counted in ``qun_job_failures_total{task}`` and set aside with a backoff; the
finders leave the stores set aside out, so a poisoned store never takes a
place among the stores a pass visits. A database outage is not a store's
fault: it ends the pass, and the next one starts afresh. ``RunExpiry`` (ops)
tries every store now and answers with the stores it could not settle.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime

from services.campaigns import metrics
from services.campaigns.activities import Activities
from services.campaigns.refunds import Refunds, SweepCounts
from services.common.clock import Clock
from services.common.db import Database
from services.common.jobs import StoreBackoff, StoreFailure, settle_stores
from services.common.loops import Loop, every
from services.common.rules import Rules

log = logging.getLogger("qun.campaigns.expiry")

STORES_PER_PASS = 100
ROWS_PER_STORE = 200
MAX_PASSES = 50

# (repository, how many stores, the stores to leave out) → stores with due work
Finder = Callable[[Refunds, int, Collection[str]], Awaitable[list[str]]]
Settler = Callable[[Refunds, str, int], Awaitable[SweepCounts]]

STEPS: tuple[tuple[str, Finder, Settler], ...] = (
    ("expired_prizes", Refunds.stores_with_expired_prizes, Refunds.settle_expired_prizes),
    ("unclaimed_pools", Refunds.stores_with_unclaimed_pools, Refunds.refund_unclaimed_pools),
    ("end_cards", Refunds.stores_with_end_cards_due, Refunds.post_due_end_cards),
)


@dataclass
class ExpiryReport:
    """What one pass settled, over every step: the counts, the stores that got something settled, and the
    stores a step could not settle (each logged and set aside)."""

    counts: SweepCounts = field(default_factory=SweepCounts)
    stores_settled: set[str] = field(default_factory=set)
    failures: list[StoreFailure] = field(default_factory=list)


class ExpiryJob:
    def __init__(self, db: Database, rules: Rules, clock: Clock) -> None:
        self.db = db
        self.rules = rules
        self.clock = clock
        # One backoff per step: a store that fails to refund its pools still gets its end cards (D3).
        self.backoffs = {name: StoreBackoff(name) for name, _find, _settle in STEPS}

    async def run_once(self, *, retry_now: bool = False) -> ExpiryReport:
        """One sweep at the clock's now; returns what this replica settled and which stores failed.

        ``retry_now`` (ops' ``RunExpiry``) tries the stores set aside too, at once.
        A database outage raises (after the counts so far are in the metrics).
        """
        if retry_now:
            for backoff in self.backoffs.values():
                backoff.forget()
        now = self.clock.now()
        report = ExpiryReport()
        try:
            for name, find, settle in STEPS:
                await self._step(self.backoffs[name], find, settle, now, report)
        finally:
            metrics.swept(report.counts)
        await self._forget_ended_flash_sales(now)
        return report

    async def _step(
        self, backoff: StoreBackoff, find: Finder, settle: Settler, now: datetime, report: ExpiryReport
    ) -> None:
        """One step, store by store, in passes of ``STORES_PER_PASS`` stores until none has due work."""

        async def settle_one(store_id: str) -> SweepCounts:
            async with self.db.transaction() as session:  # a failure rolls this store's work back whole
                return await settle(Refunds(session, self.rules, now), store_id, ROWS_PER_STORE)

        for _ in range(MAX_PASSES):
            async with self.db.transaction() as session:
                repo = Refunds(session, self.rules, now)
                stores = await find(repo, STORES_PER_PASS, backoff.waiting())
            if not stores:
                break
            done = await settle_stores(stores, settle_one, backoff)
            progress = False
            for store_id, counts in done.settled.items():
                report.counts.add(counts)
                if counts.anything:
                    report.stores_settled.add(store_id)
                    progress = True
            report.failures.extend(done.failed)
            if not progress and not done.failed:  # what is left is being settled by another replica right now
                break

    async def _forget_ended_flash_sales(self, now: datetime) -> None:
        """Stock gauges of sales that ended, also those another replica posted the end card of."""
        tracked = metrics.tracked_flash_sales()
        if not tracked:
            return
        async with self.db.transaction() as session:
            running = await Activities(session, self.rules, now).activities_still_running(tracked)
        for store_id, activity_id in tracked:
            if (store_id, activity_id) not in running:
                metrics.forget_flash_sale(activity_id)

    def loop(self, seconds: float) -> Loop:
        """The replica's timer (the runtime runs it): a sweep every ``seconds``; a failed sweep (the database
        unreachable) is logged and the next one tries again; a store that fails is set aside by its step's
        backoff and the others go on (D3)."""
        return every("expiry", seconds, self.sweep)

    async def sweep(self) -> ExpiryReport:
        """One timed sweep, logged when it settled or failed anything."""
        report = await self.run_once()
        counts = report.counts
        if counts.anything or report.failures:
            log.info(
                "expiry sweep",
                extra={
                    "fields": {
                        "red_packets_refunded": counts.red_packets_refunded,
                        "pools_refunded": counts.pools_refunded,
                        "coupons_expired": counts.coupons_expired,
                        "end_cards_posted": counts.end_cards_posted,
                        "stores_settled": len(report.stores_settled),
                        "stores_failed": len(report.failures),
                    }
                },
            )
        return report
