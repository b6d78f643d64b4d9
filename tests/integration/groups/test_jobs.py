"""The scheduler inside the groups service: each store settled once per period with two replicas, and a
store whose data is corrupt never stops or delays the others (SPEC D3, T7, T8, C15)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from prometheus_client import REGISTRY
from sqlalchemy import select, update

from qun.groups.v1 import lifecycle_pb2, lifecycle_pb2_grpc
from services.common.client import internal_channel
from services.common.clock import ManualClock
from services.common.db import Database
from services.common.rules import Rules
from services.common.server import Server
from services.common.settings import async_url
from services.groups.app import GroupsApp
from services.groups.models import (
    AuditEntry,
    CapacityOwner,
    DailyMemberCount,
    GroupLevel,
    JobSettlement,
    MonthlyMetrics,
    SleepingPlan,
)
from tests.support.inprocess import INTERNAL_TOKEN, migrate, settings_for

NOW = datetime(2026, 7, 1, 0, 10, tzinfo=UTC)  # 08:10 on July 1 in China: June 30 and June are due (D1)
DAY, MONTH = "2026-06-30", "2026-06"
GOOD, BAD = ("good-1", "good-2"), "poisoned"
JOBS = ("daily_counts", "levels", "sleeping")


def failures_counted(job: str) -> float:
    return REGISTRY.get_sample_value("qun_job_failures_total", {"task": job}) or 0.0


@asynccontextmanager
async def database(db_url: str) -> AsyncIterator[Database]:
    db = Database(async_url(db_url), pool_size=2)
    try:
        yield db
    finally:
        await db.close()


async def seed(db: Database) -> None:
    """Three stores with members, June figures and a sleeping plan; one store's rows are corrupt.

    The corrupt values bypass every validation (written straight into the rows),
    as a bug or a hand edit might leave them: a negative member count, a
    negative open rate, an inactivity window no calendar can subtract.
    """
    async with db.transaction() as session:
        for store, members in ((GOOD[0], 3), (GOOD[1], 5), (BAD, -1)):
            session.add(CapacityOwner(owner_key=store, kind="store", member_count=members, group_set_count=1))
            session.add(
                MonthlyMetrics(
                    store_id=store,
                    month=MONTH,
                    open_rate_bp=-7 if store == BAD else 150,
                    revisit_7d_bp=0,
                    conversion_bp=0,
                    merchant_messages=2,
                )
            )
            session.add(
                SleepingPlan(store_id=store, enabled=True, inactivity_days=2_000_000_000 if store == BAD else 30)
            )


async def repair(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(update(CapacityOwner).where(CapacityOwner.owner_key == BAD).values(member_count=4))
        await session.execute(update(MonthlyMetrics).where(MonthlyMetrics.store_id == BAD).values(open_rate_bp=150))
        await session.execute(update(SleepingPlan).where(SleepingPlan.store_id == BAD).values(inactivity_days=30))


async def settled(db: Database) -> tuple[set[str], set[str]]:
    """The stores counted for June 30 and the stores whose June level is settled."""
    async with db.transaction() as session:
        counted = set(await session.scalars(select(DailyMemberCount.store_id).where(DailyMemberCount.day == DAY)))
        levelled = set(
            await session.scalars(
                select(JobSettlement.store_id).where(JobSettlement.job == "levels", JobSettlement.period == MONTH)
            )
        )
    return counted, levelled


async def test_D3_two_replicas_settle_each_store_once_and_a_poisoned_store_delays_no_other(
    db_url: str, rules: Rules
) -> None:
    await migrate("groups", db_url)
    before = {job: failures_counted(job) for job in JOBS}
    async with database(db_url) as db:
        await seed(db)
        clock = ManualClock(NOW)
        settings = dataclasses.replace(settings_for("groups", db_url), job_interval_seconds=0.05)
        servers = [Server(GroupsApp(settings, rules, clock), serve_metrics_http=False) for _ in range(2)]
        ports = [await server.start() for server in servers]
        try:
            for _ in range(100):  # the loops run every 50 ms; the good stores are settled in the first rounds
                if await settled(db) == (set(GOOD), set(GOOD)):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # more rounds on both replicas change nothing
            assert await settled(db) == (set(GOOD), set(GOOD))
            for job in JOBS:  # the poisoned store failed each job, was logged and counted, and set aside
                assert failures_counted(job) > before[job]
            async with db.transaction() as session:
                levels = sorted((r.store_id, r.month, r.level) for r in await session.scalars(select(GroupLevel)))
                audited = [
                    e.target for e in await session.scalars(select(AuditEntry).where(AuditEntry.action == "level"))
                ]
            assert levels == [(GOOD[0], "2026-07", 0), (GOOD[1], "2026-07", 0)]  # T8 (default bars: L0), once per store
            assert sorted(audited) == ["2026-07", "2026-07"]

            # The ops trigger tries the poisoned store now, settles the rest, and lists the failure.
            async with internal_channel(f"127.0.0.1:{ports[0]}", INTERNAL_TOKEN) as channel:
                stub = lifecycle_pb2_grpc.GroupLifecycleServiceStub(channel)
                counts = await stub.RecordDailyCounts(lifecycle_pb2.RecordDailyCountsRequest(day=DAY))
                assert (counts.stores, counts.already_recorded) == (0, False)
                [failure] = counts.failures
                assert (failure.job, failure.store_id, failure.attempts) == ("daily_counts", BAD, 1)
                assert failure.error == f"CorruptFigures: store {BAD} has a negative member count (-1)"
                assert failure.retry_in_seconds == 30
                run = await stub.RunLevelJob(lifecycle_pb2.RunLevelJobRequest(month=MONTH))
                assert not run.ran and [(f.job, f.store_id) for f in run.failures] == [("levels", BAD)]
                assert "open_rate_bp -7" in run.failures[0].error
                swept = await stub.RunSleepingJob(lifecycle_pb2.RunSleepingJobRequest())
                assert [(f.job, f.store_id) for f in swept.failures] == [("sleeping", BAD)]
                assert swept.failures[0].error.startswith("OverflowError")

                await repair(db)
                counts = await stub.RecordDailyCounts(lifecycle_pb2.RecordDailyCountsRequest(day=DAY))
                assert (counts.stores, list(counts.failures)) == (1, [])
                run = await stub.RunLevelJob(lifecycle_pb2.RunLevelJobRequest(month=MONTH))
                assert run.ran and [(lv.store_id, lv.level) for lv in run.levels] == [(BAD, 0)]
                swept = await stub.RunSleepingJob(lifecycle_pb2.RunSleepingJobRequest())
                assert list(swept.failures) == []
            assert await settled(db) == ({*GOOD, BAD}, {*GOOD, BAD})
        finally:
            for server in servers:
                await server.stop()
