"""The dispatcher: writes the deliveries of due pushes, exactly once per recipient (SPEC P7).

An asyncio task in every replica of the push service. Each step is one
transaction (``PushRepository.dispatch_batch``): claim one due push with
``FOR UPDATE SKIP LOCKED``, write the next batch of its snapshotted audience
with a unique (store, push, recipient) key, move the push's cursor and append
the batch to the ledger. Replicas therefore never write the same batch, and a
process killed mid-batch leaves nothing behind: its transaction rolls back,
the row lock goes with its connection, and whichever replica comes next
resumes from the committed cursor. Memory is one batch's bookkeeping: the
recipients go from ``push_audience`` to ``deliveries`` inside the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from services.common.clock import Clock
from services.common.db import Database
from services.common.calendar import MarketCalendar
from services.common.rules import PushRules
from services.push import metrics
from services.push.repository import BatchResult, PushRepository

log = logging.getLogger("qun.push.dispatcher")

DRAFT_TTL = timedelta(hours=1)  # a gateway fills a draft in seconds; older ones were abandoned
PURGE_EVERY_SECONDS = 60.0
PURGE_LIMIT = 20


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
    ) -> None:
        self.db = db
        self.rules = rules
        self.market = market
        self.clock = clock
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="push-dispatcher")

    async def stop(self, timeout: float = 10.0) -> None:
        """Lets the batch in flight commit, then stops."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._task, timeout)
        except TimeoutError:
            self._task.cancel()
        self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                worked = await self.run_once()
                if time.monotonic() - self._last_purge > PURGE_EVERY_SECONDS:
                    self._last_purge = time.monotonic()
                    await self.purge()
            except Exception:  # a failed batch rolled back whole; try again after a pause
                metrics.errors.inc()
                log.exception("dispatch batch failed; retrying")
                worked = None
            if worked is None:
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.poll_seconds)
                except TimeoutError:
                    pass

    async def run_once(self) -> BatchResult | None:
        """One batch of one due push (None when nothing is due or all due ones are taken); refreshes the lag."""
        now = self.clock.now()
        started = time.perf_counter()
        async with self.db.transaction() as session:
            repository = PushRepository(session, self.rules, now, self.market)
            oldest = await repository.oldest_due()
            result = await repository.dispatch_batch(self.batch_size)
        metrics.lag.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
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
        """Runs batches until nothing is due; returns the deliveries written (tests, tools)."""
        written = 0
        while (result := await self.run_once()) is not None:
            written += result.written
        return written

    async def purge(self) -> int:
        async with self.db.transaction() as session:
            return await PushRepository(session, self.rules, self.clock.now(), self.market).purge_drafts(DRAFT_TTL, PURGE_LIMIT)
