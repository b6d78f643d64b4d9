"""The public GroupOperationsService (SPEC T2–T8, C15, R4, X2, X4, X5): role rules, then the groups service.

Capacity, levels, monthly figures and the jobs that settle them, the
sleeping-customer plan, what-if thresholds and the audit trail. The official
modules' choices are the DiscoveryService's (``gateway.recommendations``).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from gateway.access import is_staff, require_store_scope, require_store_staff
from gateway.auth import Role, current_principal
from gateway.backends import Backends, Retry
from gateway.convert import convert
from qun.common.v1 import jobs_pb2
from qun.eligibility.v1 import eligibility_pb2
from qun.gateway.v1 import operations_pb2, operations_pb2_grpc
from qun.groups.v1 import lifecycle_pb2
from services.common.errors import PermissionDenied
from services.common.validation import Fields


class GroupOperations(operations_pb2_grpc.GroupOperationsServiceServicer):
    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def ReportMonthlyMetrics(
        self, request: operations_pb2.ReportMonthlyMetricsRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.ReportMonthlyMetricsResponse:
        """T8: a month's figures; for a month the level job settled already, the level is recomputed (X4)."""
        current_principal().require(Role.UPSTREAM)
        recorded = await self.backends.call(  # an idempotent upsert (a recompute of the same figures changes nothing)
            self.backends.lifecycle.RecordMonthlyMetrics,
            convert(request, lifecycle_pb2.RecordMonthlyMetricsRequest),
            context,
            retry=Retry.SAFE,
        )
        return operations_pb2.ReportMonthlyMetricsResponse(
            level_recomputed=recorded.level_recomputed, level=recorded.level, previous_level=recorded.previous_level
        )

    async def ReportMemberActivity(
        self, request: operations_pb2.ReportMemberActivityRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.ReportMemberActivityResponse:
        current_principal().require(Role.UPSTREAM)
        forwarded = lifecycle_pb2.RecordActivityRequest(
            group_set_id=request.group_set_id, consumer_id=request.consumer_id
        )
        if request.HasField("active_at"):
            forwarded.active_at.CopyFrom(request.active_at)
        await self.backends.call(
            self.backends.lifecycle.RecordActivity, forwarded, context, retry=Retry.SAFE
        )  # moving forward only: safe to repeat
        return operations_pb2.ReportMemberActivityResponse()

    async def RunJob(
        self, request: operations_pb2.RunJobRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.RunJobResponse:
        """Ops: a job now, every store tried (also those backing off); the stores that failed are listed (D3).

        The call answers OK when some stores failed: the job did what it could,
        and the failures say which stores and why (the timer retries them).
        """
        current_principal().require(Role.OPS)
        fields = Fields()
        fields.enum("job", request.job, operations_pb2.Job)
        if request.recompute and request.job != operations_pb2.JOB_LEVELS:
            fields.fail("recompute", "only the level job recomputes a month (T8)")
        if request.period and request.job == operations_pb2.JOB_SLEEPING:
            fields.fail("period", "the sleeping job takes no period: it sweeps as of now (C15)")
        fields.done()
        if request.job == operations_pb2.JOB_DAILY_COUNTS:
            counted = await self.backends.call(
                self.backends.lifecycle.RecordDailyCounts,
                lifecycle_pb2.RecordDailyCountsRequest(day=request.period),
                context,
                retry=Retry.SAFE,
            )
            return operations_pb2.RunJobResponse(
                ran=not counted.already_recorded,
                affected=counted.stores,
                summary=_with_failures(f"{counted.stores} stores counted", counted.failures),
                failures=counted.failures,
            )
        if request.job == operations_pb2.JOB_LEVELS:
            levels = (
                await self.backends.call(  # each store's month settles once; a recompute sets the same levels again
                    self.backends.lifecycle.RunLevelJob,
                    lifecycle_pb2.RunLevelJobRequest(month=request.period, recompute=request.recompute),
                    context,
                    retry=Retry.SAFE,
                )
            )
            summary = ", ".join(f"{lv.store_id}: L{lv.level}" for lv in levels.levels)
            return operations_pb2.RunJobResponse(
                ran=levels.ran,
                affected=len(levels.levels),
                summary=_with_failures(summary, levels.failures),
                failures=levels.failures,
            )
        swept = await self.backends.call(
            self.backends.lifecycle.RunSleepingJob, lifecycle_pb2.RunSleepingJobRequest(), context, retry=Retry.SAFE
        )
        return operations_pb2.RunJobResponse(
            ran=True,
            affected=swept.notified + swept.removed,
            summary=_with_failures(f"{swept.notified} noticed, {swept.removed} removed", swept.failures),
            failures=swept.failures,
        )

    async def ApplyForExpansion(
        self, request: operations_pb2.ApplyForExpansionRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.ApplyForExpansionResponse:
        principal = current_principal()
        principal.require(Role.STORE_MAIN, rule_id="T3", why="the store's main account applies for expansion")
        require_store_scope(principal, request.store_id, Role.STORE_MAIN)
        granted = await self.backends.call(
            self.backends.lifecycle.ApplyForExpansion,
            convert(request, lifecycle_pb2.ApplyForExpansionRequest),
            context,
            retry=Retry.NEVER,
        )
        return operations_pb2.ApplyForExpansionResponse(
            granted_members=granted.granted_members, member_capacity=granted.member_capacity
        )

    async def GetCapacity(
        self, request: operations_pb2.GetCapacityRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.GetCapacityResponse:
        require_store_staff(current_principal(), request.store_id)
        reply = await self.backends.call(
            self.backends.lifecycle.GetCapacity,
            convert(request, lifecycle_pb2.GetCapacityRequest),
            context,
            retry=Retry.SAFE,
        )
        return convert(reply, operations_pb2.GetCapacityResponse)

    async def SetSleepingPlan(
        self, request: operations_pb2.SetSleepingPlanRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.SetSleepingPlanResponse:
        principal = current_principal()
        principal.require(Role.STORE_MAIN, rule_id="C15")
        require_store_scope(principal, request.store_id, Role.STORE_MAIN)
        plan = await self.backends.call(  # sets state: safe to repeat
            self.backends.lifecycle.SetSleepingPlan,
            convert(request, lifecycle_pb2.SetSleepingPlanRequest),
            context,
            retry=Retry.SAFE,
        )
        return operations_pb2.SetSleepingPlanResponse(enabled=plan.enabled, inactivity_days=plan.inactivity_days)

    async def ListAuditEntries(
        self, request: operations_pb2.ListAuditEntriesRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.ListAuditEntriesResponse:
        principal = current_principal()
        if request.streamer_id and not request.store_id:
            if principal.role is not Role.OPS and principal.subject != request.streamer_id:
                raise PermissionDenied("a streamer reads its own audit trail")
        else:
            require_store_staff(principal, request.store_id)
        reply = await self.backends.call(
            self.backends.lifecycle.ListAuditEntries,
            convert(request, lifecycle_pb2.ListAuditEntriesRequest),
            context,
            retry=Retry.SAFE,
        )
        return convert(reply, operations_pb2.ListAuditEntriesResponse)

    async def WhatIfThreshold(
        self, request: operations_pb2.WhatIfThresholdRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.WhatIfThresholdResponse:
        fields = Fields()
        fields.identifier("group_set_id", request.group_set_id)
        if not request.HasField("threshold") or not request.threshold.WhichOneof("rule"):
            fields.fail("threshold", "required")
        elif request.threshold.WhichOneof("rule") == "password":
            fields.fail("threshold", "a password depends on what consumers type; what-if takes the other kinds")
        fields.done()
        found = await self.backends.group_set(request.group_set_id, context)
        principal = current_principal()
        if not is_staff(principal, found):
            raise PermissionDenied("the owner and super admins ask what-if", rule_id="X2")
        members: list[str] = []
        token = ""
        while True:
            page = await self.backends.call(
                self.backends.lifecycle.ListMemberIds,
                lifecycle_pb2.ListMemberIdsRequest(group_set_id=found.group_set_id, page_size=500, page_token=token),
                context,
                retry=Retry.SAFE,
            )
            members.extend(page.consumer_ids)
            token = page.next_page_token
            if not token:
                break
        answer = await self.backends.call(
            self.backends.eligibility.WhatIfThreshold,
            eligibility_pb2.WhatIfThresholdRequest(
                kind=found.kind,
                store_id=found.store_id,
                streamer_id=found.streamer_id,
                current_threshold=found.threshold,
                new_threshold=request.threshold,
                member_ids=members,
            ),
            context,
            retry=Retry.SAFE,
        )
        return operations_pb2.WhatIfThresholdResponse(
            members=len(members),
            members_failing=answer.members_failing,
            newly_qualifying=answer.newly_qualifying,
            known_consumers=answer.known_consumers,
        )


def _with_failures(summary: str, failures: Sequence[jobs_pb2.JobFailure]) -> str:
    """The job's summary, and how many stores failed (each listed in ``failures``)."""
    if not failures:
        return summary
    failed = f"{len(failures)} store{'s' if len(failures) > 1 else ''} failed: " + ", ".join(
        f.store_id for f in failures
    )
    return f"{summary}; {failed}" if summary else failed
