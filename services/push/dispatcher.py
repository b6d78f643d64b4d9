"""The dispatcher: writes the deliveries of due pushes, exactly once per recipient (SPEC P7), store by store (D3).

A loop in every replica of the push service, run by the runtime
(``services.common.loops``). Each batch is one
transaction (``Deliveries.dispatch_batch``): claim a store's oldest due
push with ``FOR UPDATE SKIP LOCKED``, write the next batch of its
snapshotted audience with a unique (store, push, recipient) key, move the
push's cursor and append the batch to the ledger. Replicas therefore never
write the same batch, and a process killed mid-batch leaves nothing behind:
its transaction rolls back, the row lock goes with its connection, and
whichever replica comes next resumes from the committed cursor. Memory is one
batch's bookkeeping: the recipients go from ``push_audience`` to
``deliveries`` inside the database.

A pass gives one batch to each store with a due push, the longest waiting
first, through ``services.common.jobs.settle_stores`` (SPEC D3): a store
whose batch fails (data this version cannot send) is logged, counted in
``qun_job_failures_total{task="dispatch"}`` and set aside with a backoff
while every other store's pushes go out on time; a 100,000-recipient push
delays no other store by more than a batch either. A database outage is no
store's fault: it ends the pass and the loop retries. Abandoned drafts are
cleaned up the same way (``draft_cleanup``), and the loop refreshes the
review queue's gauges (SPEC P8) from the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.calendar import MarketCalendar
from services.common.clock import Clock
from services.common.db import Database
from services.common.jobs import JobReport, StoreBackoff, settle_stores
from services.common.loops import Loop, stopped_within
from services.common.rules import PushRules
from services.push import metrics
from services.push.deliveries import BatchResult, Deliveries
from services.push.drafts import Drafts
from services.push.repository import PushUnit
from services.push.reviews import Reviews

log = logging.getLogger("qun.push.dispatcher")
U = TypeVar("U", bound=PushUnit)

DISPATCH_JOB = "dispatch"
CLEANUP_JOB = "draft_cleanup"
DRAFT_TTL = timedelta(hours=1)  # a gateway fills a draft in seconds; older ones were abandoned
PURGE_EVERY_SECONDS = 60.0
PURGE_LIMIT = 20  # drafts of one store per clean-up pass
PURGE_STORES = 50  # stores per clean-up pass
STORES_PER_PASS = 100  # stores given a batch per dispatch pass; the next pass takes the rest
QUEUE_EVERY_SECONDS = 15.0  # the review queue's gauges; the alert on them waits 10 minutes


@dataclass(frozen=True)
class DispatchPass:
    """What one pass did: each store's batch (None when another replica held its push), the stores that failed."""

    report: JobReport[BatchResult | None]

    @property
    def batches(self) -> list[BatchResult]:
        return [batch for batch in self.report.settled.values() if batch is not None]

    @property
    def written(self) -> int:
        return sum(batch.written for batch in self.batches)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        rules: PushRules,
        market: MarketCalendar,
        clock: Clock,
        *,
        batch_size: int = 2000,
        poll_seconds: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.rules = rules
        self.market = market
        self.clock = clock
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        # Per replica and in memory (services.common.jobs): another replica may try a store sooner, harmlessly.
        self.dispatch_backoff = StoreBackoff(DISPATCH_JOB, clock=monotonic)
        self.cleanup_backoff = StoreBackoff(CLEANUP_JOB, clock=monotonic)
        self._last_purge = 0.0
        self._last_queue = float("-inf")
        metrics.review_window.set(timedelta(hours=rules.review_delay_hours).total_seconds())

    def _unit(self, unit: type[U], session: AsyncSession) -> U:
        return unit(session, self.rules, self.clock.now(), self.market)

    def loop(self) -> Loop:
        """The dispatcher as the runtime runs it (``services.common.loops``), in every replica that dispatches."""
        return Loop("push-dispatcher", self.run)

    async def run(self, stopping: asyncio.Event) -> None:
        """Passes until ``stopping`` is set: at once after a pass that wrote, after ``poll_seconds`` otherwise."""
        while not stopping.is_set():
            worked = False
            try:
                worked = bool((await self.run_once()).batches)
                await self._periodic()
            except Exception:  # the database, not a store (those are set aside): try again after a pause
                metrics.errors.inc()
                log.exception("dispatcher pass failed; retrying")
            if not worked and await stopped_within(stopping, self.poll_seconds):
                return

    async def _periodic(self) -> None:
        """The review queue's gauges every QUEUE_EVERY_SECONDS (at once on start), the draft clean-up every minute."""
        if time.monotonic() - self._last_queue >= QUEUE_EVERY_SECONDS:
            self._last_queue = time.monotonic()
            await self.observe_queue()
        if time.monotonic() - self._last_purge > PURGE_EVERY_SECONDS:
            self._last_purge = time.monotonic()
            await self.purge()

    async def run_once(self) -> DispatchPass:
        """One batch for each store with a due push, longest waiting first, skipping stores set aside (D3).

        Refreshes the lag: how long the oldest due push of a store not set aside has waited (a store set
        aside is reported by ``qun_job_failures_total`` and ``qun_job_stores_backing_off`` instead).
        """
        now = self.clock.now()
        async with self.db.transaction() as session:
            due = await Deliveries(session, self.rules, now, self.market).due_stores(
                self.dispatch_backoff.waiting(), STORES_PER_PASS
            )
        metrics.lag.set(max(0.0, (now - due[0][1]).total_seconds()) if due else 0.0)
        report = await settle_stores([store for store, _ in due], self._batch, self.dispatch_backoff)
        return DispatchPass(report)

    async def _batch(self, store_id: str) -> BatchResult | None:
        started = time.perf_counter()
        async with self.db.transaction() as session:
            result = await self._unit(Deliveries, session).dispatch_batch(store_id, self.batch_size)
        if result is None:
            return None
        metrics.batches.observe(time.perf_counter() - started)
        metrics.deliveries.inc(result.written)
        if result.finished:
            metrics.pushes.labels(result.kind, "sent").inc()
            log.info(
                "push sent",
                extra={"fields": {"push_id": result.push_id, "store_id": result.store_id, "kind": result.kind}},
            )
        return result

    async def drain(self) -> int:
        """Runs passes until no store has a batch to write; returns the deliveries written (tests, tools)."""
        written = 0
        while batches := (await self.run_once()).batches:
            written += sum(batch.written for batch in batches)
        return written

    async def purge(self) -> JobReport[int]:
        """Drops abandoned drafts store by store (D3); ``settled`` says how many went in each store."""
        async with self.db.transaction() as session:
            stores = await self._unit(Drafts, session).stale_draft_stores(
                DRAFT_TTL, self.cleanup_backoff.waiting(), PURGE_STORES
            )
        return await settle_stores(stores, self._purge_store, self.cleanup_backoff)

    async def _purge_store(self, store_id: str) -> int:
        async with self.db.transaction() as session:
            return await self._unit(Drafts, session).purge_drafts(store_id, DRAFT_TTL, PURGE_LIMIT)

    async def observe_queue(self) -> tuple[float, int]:
        """P8: the age of the oldest push pending review and how many are pending, read from the database."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            oldest, count = await self._unit(Reviews, session).review_queue()
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        metrics.oldest_pending_review.set(age)
        metrics.pending_reviews.set(count)
        return age, count
