"""The GroupLifecycleService RPCs: levels, capacity, sleeping customers, audit, candidates.

The same validation and one-transaction-per-RPC shape as the core servicer;
the jobs it triggers are the ones the scheduler runs (``jobs.py``).
"""

from __future__ import annotations

from datetime import timedelta

import grpc
from sqlalchemy.ext.asyncio import AsyncSession

from qun.groups.v1 import lifecycle_pb2, lifecycle_pb2_grpc
from services.common.clock import Clock
from services.common.db import Database
from services.common.interceptors import ACTOR_HEADER, metadata_value
from services.common.jobs import failure_to_proto
from services.common.messages import message_from
from services.common.page_tokens import decode_page_token, decode_position, encode_page_token, encode_position
from services.common.rules import Rules
from services.common.validation import Fields, require_ids, require_page
from services.groups import lifecycle
from services.groups.convert import group_set_to_proto
from services.groups.jobs import Jobs
from services.groups.lifecycle import MAX_BASIS_POINTS, MonthFigures
from services.groups.lifecycle_repository import CapacityView, LifecycleRepository
from services.groups.reads import Reads
from services.groups.rules import GroupKind, owner_key

MAX_INACTIVITY_DAYS = 3650


def _capacity_to_proto(view: CapacityView) -> lifecycle_pb2.GetCapacityResponse:
    history = [lifecycle_pb2.MonthLevel(month=m, level=lv) for m, lv in view.history]
    return message_from(lifecycle_pb2.GetCapacityResponse, view, history=history)


class GroupLifecycleServicer(lifecycle_pb2_grpc.GroupLifecycleServiceServicer):
    def __init__(self, db: Database, rules: Rules, clock: Clock, jobs: Jobs) -> None:
        self.db = db
        self.rules = rules
        self.clock = clock
        self.jobs = jobs

    def _repository(self, session: AsyncSession, context: grpc.aio.ServicerContext) -> LifecycleRepository:
        return LifecycleRepository(session, self.rules, self.clock.now(), metadata_value(context, ACTOR_HEADER))

    async def RecordMonthlyMetrics(
        self, request: lifecycle_pb2.RecordMonthlyMetricsRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.RecordMonthlyMetricsResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        month = f.month("month", request.month)
        for name in ("open_rate_bp", "revisit_7d_bp", "conversion_bp"):
            f.in_range(name, getattr(request, name), 0, MAX_BASIS_POINTS)
        f.in_range("merchant_messages", request.merchant_messages, 0, self.rules.bounds.monthly_messages)
        if month is not None and month > lifecycle.month_key(self.clock.now(), self.rules.calendar.market):
            f.fail("month", f"{month} has not begun; figures are reported for a month begun or ended (T8)")
        f.done()
        figures = MonthFigures(
            0.0, request.open_rate_bp, request.revisit_7d_bp, request.conversion_bp, request.merchant_messages
        )
        async with self.db.transaction() as session:
            settled = await self._repository(session, context).record_monthly_metrics(
                request.store_id, request.month, figures
            )
        if settled is None:
            return lifecycle_pb2.RecordMonthlyMetricsResponse()
        return lifecycle_pb2.RecordMonthlyMetricsResponse(
            level_recomputed=True,
            level=settled.level,
            previous_level=settled.previous if settled.previous is not None else 0,
        )

    async def RecordDailyCounts(
        self, request: lifecycle_pb2.RecordDailyCountsRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.RecordDailyCountsResponse:
        f = Fields()
        asked = f.day("day", request.day, required=False)
        now = self.clock.now()
        if asked is not None and asked >= lifecycle.day_key(now, self.rules.calendar.market):
            # The count is taken now and stands for the day: a day not ended would keep tonight's count out.
            f.fail("day", f"{asked} has not ended; members are counted for a finished day (T7)")
        f.done()
        day = asked or lifecycle.day_key(now - timedelta(days=1), self.rules.calendar.market)
        report = await self.jobs.record_daily_counts(day, metadata_value(context, ACTOR_HEADER), retry_now=True)
        counted = sum(1 for members in report.settled.values() if members is not None)
        return lifecycle_pb2.RecordDailyCountsResponse(
            stores=counted,
            already_recorded=counted == 0 and not report.failed,
            failures=[failure_to_proto(f) for f in report.failed],
        )

    async def RunLevelJob(
        self, request: lifecycle_pb2.RunLevelJobRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.RunLevelJobResponse:
        f = Fields()
        f.month("month", request.month, required=False)
        f.done()
        current = lifecycle.month_key(self.clock.now(), self.rules.calendar.market)
        month = request.month or lifecycle.shift_month(current, -1)
        if month >= current:
            f.fail("month", f"{month} has not ended; the level job runs on finished months (T8)")
            f.done()
        report = await self.jobs.run_levels(
            month, metadata_value(context, ACTOR_HEADER), retry_now=True, recompute=request.recompute
        )
        settled = [s for s in report.settled.values() if s is not None]
        return lifecycle_pb2.RunLevelJobResponse(
            ran=bool(settled),
            levels=[
                lifecycle_pb2.StoreLevel(store_id=s.store_id, level=s.level, avg_members=s.avg_members) for s in settled
            ],
            failures=[failure_to_proto(f) for f in report.failed],
        )

    async def ApplyForExpansion(
        self, request: lifecycle_pb2.ApplyForExpansionRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.ApplyForExpansionResponse:
        require_ids(request, "store_id")
        async with self.db.transaction() as session:
            view, granted = await self._repository(session, context).apply_for_expansion(request.store_id)
        return lifecycle_pb2.ApplyForExpansionResponse(granted_members=granted, member_capacity=view.member_capacity)

    async def GetCapacity(
        self, request: lifecycle_pb2.GetCapacityRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.GetCapacityResponse:
        require_ids(request, "store_id")
        async with self.db.transaction() as session:
            view = await self._repository(session, context).capacity(request.store_id)
        return _capacity_to_proto(view)

    async def SetSleepingPlan(
        self, request: lifecycle_pb2.SetSleepingPlanRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.SetSleepingPlanResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.in_range("inactivity_days", request.inactivity_days, 0, MAX_INACTIVITY_DAYS)
        f.done()
        days = request.inactivity_days or self.rules.sleeping.default_inactivity_days
        async with self.db.transaction() as session:
            plan = await self._repository(session, context).set_sleeping_plan(request.store_id, request.enabled, days)
        return lifecycle_pb2.SetSleepingPlanResponse(enabled=plan.enabled, inactivity_days=plan.inactivity_days)

    async def RecordActivity(
        self, request: lifecycle_pb2.RecordActivityRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.RecordActivityResponse:
        f = Fields()
        f.identifier("group_set_id", request.group_set_id)
        f.identifier("consumer_id", request.consumer_id)
        at = f.instant("active_at", request.active_at if request.HasField("active_at") else None)
        if at is not None and at > self.clock.now() + timedelta(days=1):
            f.fail("active_at", "more than a day in the future")
        f.done()
        assert at is not None
        async with self.db.transaction() as session:
            await self._repository(session, context).record_activity(request.group_set_id, request.consumer_id, at)
        return lifecycle_pb2.RecordActivityResponse()

    async def RunSleepingJob(
        self, request: lifecycle_pb2.RunSleepingJobRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.RunSleepingJobResponse:
        report = await self.jobs.run_sleeping(metadata_value(context, ACTOR_HEADER), retry_now=True)
        return lifecycle_pb2.RunSleepingJobResponse(
            notified=sum(o.notified for o in report.settled.values()),
            removed=sum(o.removed for o in report.settled.values()),
            failures=[failure_to_proto(f) for f in report.failed],
        )

    async def ListAuditEntries(
        self, request: lifecycle_pb2.ListAuditEntriesRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.ListAuditEntriesResponse:
        f = Fields()
        f.identifier("store_id", request.store_id, required=False)
        f.identifier("streamer_id", request.streamer_id, required=False)
        if bool(request.store_id) == bool(request.streamer_id):
            f.fail("store_id", "exactly one of store_id and streamer_id is required")
        limit = f.page_size("page_size", request.page_size)
        f.done()
        after = decode_position(request.page_token)
        kind = GroupKind.STORE if request.store_id else GroupKind.LIVE
        key = owner_key(kind, request.store_id, request.streamer_id)
        async with self.db.transaction() as session:
            rows, last = await Reads(session, self.rules, self.clock.now()).audit_entries(key, after, limit)
        return lifecycle_pb2.ListAuditEntriesResponse(
            entries=[message_from(lifecycle_pb2.AuditEntry, r) for r in rows],
            next_page_token=encode_position(last),
        )

    async def ListCandidates(
        self, request: lifecycle_pb2.ListCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.ListCandidatesResponse:
        require_ids(request, "store_id", "consumer_id")
        async with self.db.transaction() as session:
            found = await Reads(session, self.rules, self.clock.now()).candidates(request.store_id, request.consumer_id)
        return message_from(
            lifecycle_pb2.ListCandidatesResponse,
            found,
            candidates=[
                lifecycle_pb2.Candidate(group_set=group_set_to_proto(record, self.rules), full=full)
                for record, full in found.sets
            ],
        )

    async def ListMemberIds(
        self, request: lifecycle_pb2.ListMemberIdsRequest, context: grpc.aio.ServicerContext
    ) -> lifecycle_pb2.ListMemberIdsResponse:
        limit = require_page(request, "group_set_id", default=500)
        cursor = decode_page_token(request.page_token, 1)
        async with self.db.transaction() as session:
            ids, last = await Reads(session, self.rules, self.clock.now()).member_ids(
                request.group_set_id, cursor[0] if cursor else None, limit
            )
        return lifecycle_pb2.ListMemberIdsResponse(
            consumer_ids=ids, next_page_token=encode_page_token(last) if last else ""
        )
