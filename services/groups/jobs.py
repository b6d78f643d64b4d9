"""The groups service's scheduled jobs, and the loop that runs them.

Every replica runs the loop; each job claims its period in the database
(``job_runs``), so a day's counts and a month's levels are computed once
however many replicas there are. The sleeping-customer pass is state-based
and per member, under the same row locks as a leave, so it may run anywhere
at any time. Ops trigger the same jobs through the gateway.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.exc import DBAPIError

from services.common.clock import Clock
from services.common.db import Database
from services.common.rules import Rules
from services.groups import lifecycle
from services.groups.lifecycle import SleepingAction
from services.groups.lifecycle_repository import LifecycleRepository
from services.groups.repository import SYSTEM_ACTOR

log = logging.getLogger("qun.groups.jobs")


class Jobs:
    def __init__(self, db: Database, rules: Rules, clock: Clock) -> None:
        self.db = db
        self.rules = rules
        self.clock = clock

    def _repository(self, session, actor: str) -> LifecycleRepository:  # type: ignore[no-untyped-def]
        return LifecycleRepository(session, self.rules, self.clock.now(), actor or SYSTEM_ACTOR)

    async def record_daily_counts(self, day: str, actor: str = SYSTEM_ACTOR) -> int | None:
        async with self.db.transaction() as session:
            return await self._repository(session, actor).record_daily_counts(day)

    async def run_levels(self, month: str, actor: str = SYSTEM_ACTOR) -> list[tuple[str, int, float]] | None:
        async with self.db.transaction() as session:
            return await self._repository(session, actor).run_level_job(month)

    async def run_sleeping(self, actor: str = SYSTEM_ACTOR) -> tuple[int, int]:
        """One pass: notice the newly inactive, remove those whose notice ran out (C15, X5)."""
        async with self.db.transaction() as session:
            candidates = await self._repository(session, actor).sleeping_candidates()
        notified = removed = 0
        for group_set_id, consumer_id, window in candidates:
            async with self.db.transaction() as session:
                action = await self._repository(session, actor).sleep_member(group_set_id, consumer_id, window)
            notified += action is SleepingAction.NOTIFY
            removed += action is SleepingAction.REMOVE
        return notified, removed

    async def run_due(self) -> None:
        """What the schedule owes now: yesterday's counts, last month's levels, a sleeping pass."""
        now = self.clock.now()
        market = self.rules.calendar.market
        await self.record_daily_counts(lifecycle.day_key(now - timedelta(days=1), market))
        await self.run_levels(lifecycle.shift_month(lifecycle.month_key(now, market), -1))
        await self.run_sleeping()

    async def loop(self, interval: float) -> None:
        while True:
            try:
                await self.run_due()
            except (DBAPIError, OSError) as error:  # the database is away: try again next round
                log.warning("scheduled jobs failed", extra={"fields": {"error": str(error)}})
            await asyncio.sleep(interval)
