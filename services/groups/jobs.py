"""The groups service's scheduled jobs, and the loop that runs them.

Every job settles one store at a time, each store in its own transaction,
through ``services.common.jobs.settle_stores`` (SPEC D3): a store whose
settlement raises is logged, counted in ``qun_job_failures_total{task}`` and
retried after a backoff, and never stops or delays the other stores. Each job
has its own backoff (``StoreBackoff``), kept per replica.

Every replica runs the loop; a store's day is claimed by its count's row and
a store's month by its ``job_settlements`` row, so each is computed once
however many replicas there are (``lifecycle_repository``). The
sleeping-customer pass is state-based and per member, under the same row
locks as a leave, so it may run anywhere at any time. Ops trigger the same
jobs through the gateway; a trigger tries every store now, also those
backing off, and answers with what it settled and what failed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.clock import Clock
from services.common.db import Database, is_unavailable
from services.common.jobs import JobReport, StoreBackoff, settle_stores
from services.common.loops import Loop, every
from services.common.rules import Rules
from services.groups import lifecycle, metrics
from services.groups.lifecycle import SleepingAction
from services.groups.lifecycle_repository import LevelSettlement, LifecycleRepository
from services.groups.repository import SYSTEM_ACTOR

log = logging.getLogger("qun.groups.jobs")

DAILY_COUNTS = "daily_counts"
LEVELS = "levels"
SLEEPING = "sleeping"


@dataclass(frozen=True)
class SleepingOutcome:
    """One store's sleeping-customer pass (C15, X5)."""

    notified: int
    removed: int


class Jobs:
    def __init__(self, db: Database, rules: Rules, clock: Clock) -> None:
        self.db = db
        self.rules = rules
        self.clock = clock
        self.backoffs = {job: StoreBackoff(job) for job in (DAILY_COUNTS, LEVELS, SLEEPING)}

    def _repository(self, session: AsyncSession, actor: str) -> LifecycleRepository:
        return LifecycleRepository(session, self.rules, self.clock.now(), actor or SYSTEM_ACTOR)

    def _backoff(self, job: str, retry_now: bool) -> StoreBackoff:
        backoff = self.backoffs[job]
        if retry_now:
            backoff.forget()
        return backoff

    async def record_daily_counts(
        self, day: str, actor: str = SYSTEM_ACTOR, *, retry_now: bool = False
    ) -> JobReport[int | None]:
        """T7: each store's member count for ``day``, store by store (None: counted already)."""
        async with self.db.transaction() as session:
            stores = await self._repository(session, actor).stores_to_count(day)

        async def settle(store_id: str) -> int | None:
            async with self.db.transaction() as session:
                return await self._repository(session, actor).record_daily_count(store_id, day)

        return await settle_stores(stores, settle, self._backoff(DAILY_COUNTS, retry_now))

    async def run_levels(
        self, month: str, actor: str = SYSTEM_ACTOR, *, retry_now: bool = False, recompute: bool = False
    ) -> JobReport[LevelSettlement | None]:
        """T8: each store's level from ``month``'s figures, store by store (None: settled already).

        ``recompute`` settles every store of the month again (ops, audited).
        """
        async with self.db.transaction() as session:
            stores = await self._repository(session, actor).stores_to_level(month, recompute=recompute)

        async def settle(store_id: str) -> LevelSettlement | None:
            async with self.db.transaction() as session:
                return await self._repository(session, actor).settle_level(store_id, month, recompute=recompute)

        return await settle_stores(stores, settle, self._backoff(LEVELS, retry_now))

    async def run_sleeping(self, actor: str = SYSTEM_ACTOR, *, retry_now: bool = False) -> JobReport[SleepingOutcome]:
        """One pass, store by store: notice the newly inactive, remove those whose notice ran out (C15, X5)."""
        async with self.db.transaction() as session:
            stores = await self._repository(session, actor).sleeping_stores()

        async def settle(store_id: str) -> SleepingOutcome:
            async with self.db.transaction() as session:
                candidates = await self._repository(session, actor).sleeping_candidates(store_id)
            notified = removed = 0
            for group_set_id, consumer_id, window in candidates:
                async with self.db.transaction() as session:
                    action, removal = await self._repository(session, actor).sleep_member(
                        group_set_id, consumer_id, window
                    )
                notified += action is SleepingAction.NOTIFY
                if removal is not None:
                    removed += 1
                    metrics.removed(str(removal.cause))
            return SleepingOutcome(notified, removed)

        return await settle_stores(stores, settle, self._backoff(SLEEPING, retry_now))

    async def run_due(self) -> None:
        """What the schedule owes now: yesterday's counts, last month's levels, a sleeping pass.

        Each job runs even when another failed as a whole (the database away
        while it listed its stores): their stores are independent.
        """
        now = self.clock.now()
        market = self.rules.calendar.market
        due = (
            (DAILY_COUNTS, lambda: self.record_daily_counts(lifecycle.day_key(now - timedelta(days=1), market))),
            (LEVELS, lambda: self.run_levels(lifecycle.shift_month(lifecycle.month_key(now, market), -1))),
            (SLEEPING, self.run_sleeping),
        )
        for job, run in due:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the next round tries again
                fields = {"fields": {"job": job, "error": str(error)}}
                if is_unavailable(error):  # the database is away: not a bug
                    log.warning("scheduled job could not reach the database", extra=fields)
                else:
                    log.error("scheduled job failed before settling its stores", exc_info=error, extra=fields)

    def loop(self, interval: float) -> Loop:
        """The schedule: what is due, at start and then every ``interval`` seconds (the runtime runs it)."""
        return every("groups-jobs", interval, self.run_due, at_once=True)
