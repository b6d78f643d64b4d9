"""The days and months a caller names for the jobs and their figures (SPEC D1, T7, T8).

A period is a real one, in the years a timestamp holds, and it is judged on
the marketplace's calendar (UTC+8): a day not ended yet is not counted (the
count taken now would stand for it and keep tonight's out), figures are not
reported for a month not begun, and a refusal writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import func, select

from qun.groups.v1 import groups_pb2, groups_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc
from services.common.client import internal_channel
from services.common.clock import ManualClock
from services.common.db import Database
from services.common.rules import Rules
from services.common.server import Server
from services.common.settings import async_url
from services.groups.app import GroupsApp
from services.groups.models import CapacityOwner, DailyMemberCount, GroupLevel, MonthlyMetrics
from tests.support.inprocess import INTERNAL_TOKEN, migrate, settings_for

# 00:10 on July 1 in the marketplace, still June 30 in UTC: June 30 and June have ended there.
NOW = datetime(2026, 6, 30, 16, 10, tzinfo=UTC)
STORE = "store-periods"


@pytest.fixture
async def stubs(
    db_url: str, rules: Rules
) -> AsyncIterator[tuple[Database, lifecycle_pb2_grpc.GroupLifecycleServiceStub, groups_pb2_grpc.GroupsServiceStub]]:
    await migrate("groups", db_url)
    db = Database(async_url(db_url), pool_size=2)
    async with db.transaction() as session:
        session.add(CapacityOwner(owner_key=STORE, kind="store", member_count=7, group_set_count=1))
    settings = dataclasses.replace(settings_for("groups", db_url), job_interval_seconds=3600)
    server = Server(GroupsApp(settings, rules, ManualClock(NOW)), serve_metrics_http=False)
    port = await server.start()
    try:
        async with internal_channel(f"127.0.0.1:{port}", INTERNAL_TOKEN) as channel:
            yield db, lifecycle_pb2_grpc.GroupLifecycleServiceStub(channel), groups_pb2_grpc.GroupsServiceStub(channel)
    finally:
        await server.stop()
        await db.close()


async def refused(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]  # a grpc.aio call object
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details() or ""


async def rows(db: Database, model: type) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def counted_on(db: Database, day: str) -> list[int]:
    async with db.transaction() as session:
        return list(await session.scalars(select(DailyMemberCount.members).where(DailyMemberCount.day == day)))


@pytest.mark.parametrize("day", ["2026-02-31", "2026-13-01", "0000-01-01", "1969-12-31", "26-06-01", "2026-6-1"])
async def test_D1_a_day_that_is_no_calendar_day_is_refused(stubs, day: str) -> None:  # type: ignore[no-untyped-def]
    db, lifecycle, _ = stubs
    details = await refused(lifecycle.RecordDailyCounts(lifecycle_pb2.RecordDailyCountsRequest(day=day)))
    assert f"day: must be a calendar day YYYY-MM-DD from 1970-01-01 to 9999-12-31, got '{day}'" in details
    assert await counted_on(db, day) == []


async def test_T7_a_day_is_counted_once_it_has_ended_in_the_marketplace(stubs) -> None:  # type: ignore[no-untyped-def]
    db, lifecycle, _ = stubs
    for day in ("2026-07-01", "2026-07-02", "9999-12-31"):  # today there, and later
        details = await refused(lifecycle.RecordDailyCounts(lifecycle_pb2.RecordDailyCountsRequest(day=day)))
        assert f"day: {day} has not ended; members are counted for a finished day (T7)" in details
        assert await counted_on(db, day) == []
    # Today in UTC, ended in the marketplace: counted (by this call, or by the scheduler's first round before it).
    await lifecycle.RecordDailyCounts(lifecycle_pb2.RecordDailyCountsRequest(day="2026-06-30"))
    assert await counted_on(db, "2026-06-30") == [7]


@pytest.mark.parametrize("month", ["0000-01", "1969-12", "2026-00", "2026-13", "2026-7", "10000-01"])
async def test_D1_a_month_that_is_no_month_is_refused_everywhere(stubs, month: str) -> None:  # type: ignore[no-untyped-def]
    db, lifecycle, groups = stubs
    expected = f"month: must be a month YYYY-MM from 1970-01 to 9999-12, got '{month}'"
    for call in (
        lifecycle.RunLevelJob(lifecycle_pb2.RunLevelJobRequest(month=month)),
        lifecycle.RecordMonthlyMetrics(lifecycle_pb2.RecordMonthlyMetricsRequest(store_id=STORE, month=month)),
        groups.SetGroupLevel(groups_pb2.SetGroupLevelRequest(store_id=STORE, month=month, level=1)),
    ):
        assert expected in await refused(call)
    async with db.transaction() as session:
        kept = [*await session.scalars(select(MonthlyMetrics.month)), *await session.scalars(select(GroupLevel.month))]
    assert month not in kept


async def test_T8_figures_wait_for_their_month_to_begin_in_the_marketplace(stubs) -> None:  # type: ignore[no-untyped-def]
    db, lifecycle, _ = stubs
    ahead = lifecycle_pb2.RecordMonthlyMetricsRequest(store_id=STORE, month="2026-08", open_rate_bp=100)
    details = await refused(lifecycle.RecordMonthlyMetrics(ahead))
    assert "month: 2026-08 has not begun; figures are reported for a month begun or ended (T8)" in details
    assert await rows(db, MonthlyMetrics) == 0
    for month in ("2026-07", "2026-06"):  # begun there (still June in UTC), and ended
        await lifecycle.RecordMonthlyMetrics(lifecycle_pb2.RecordMonthlyMetricsRequest(store_id=STORE, month=month))
    assert await rows(db, MonthlyMetrics) == 2
    details = await refused(lifecycle.RunLevelJob(lifecycle_pb2.RunLevelJobRequest(month="2026-07")))
    assert "month: 2026-07 has not ended; the level job runs on finished months (T8)" in details
