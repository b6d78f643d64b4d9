"""The public GroupOperationsService and DiscoveryService (SPEC T2–T8, C3, C15, R4, V1–V6, X2, X4, X5).

Role rules first; then the groups service for state, the eligibility service
for verdicts (run concurrently, one per candidate group-set), the campaigns
service for whether an item is in a group buy (V3), and the plain functions
of ``gateway.discovery`` to choose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from gateway import discovery
from gateway.access import is_staff, is_staff_account, require_store_scope, require_store_staff
from gateway.auth import Principal, Role, current_principal
from gateway.backends import Backends, Retry
from gateway.convert import convert
from gateway.downstream import Relayed
from qun.campaigns.v1 import campaigns_pb2 as internal_campaigns
from qun.common.v1 import jobs_pb2
from qun.eligibility.v1 import eligibility_pb2
from qun.gateway.v1 import operations_pb2, operations_pb2_grpc
from qun.groups.v1 import groups_pb2, lifecycle_pb2
from services.common.clock import Clock
from services.common.errors import NotFound, PermissionDenied, failures_of, verdict
from services.common.rules import Rules
from services.common.validation import Fields

THRESHOLD_KINDS = {
    "follow": discovery.ThresholdKind.FOLLOW,
    "spend": discovery.ThresholdKind.SPEND,
    "password": discovery.ThresholdKind.PASSWORD,
    "crowd": discovery.ThresholdKind.CROWD,
    "fan_level": discovery.ThresholdKind.FAN_LEVEL,
}
MESSAGE_KINDS = {
    operations_pb2.MESSAGE_KIND_TEXT: discovery.MessageKind.TEXT,
    operations_pb2.MESSAGE_KIND_ITEM_SHARE: discovery.MessageKind.ITEM_SHARE,
    operations_pb2.MESSAGE_KIND_VIDEO: discovery.MessageKind.VIDEO,
}
KNOWN_INTERACTIONS = frozenset(
    {
        operations_pb2.ITEM_INTERACTION_BROWSED,
        operations_pb2.ITEM_INTERACTION_FAVOURITED,
        operations_pb2.ITEM_INTERACTION_CARTED,
        operations_pb2.ITEM_INTERACTION_BOUGHT,
    }
)


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
        view = await self.backends.call(
            self.backends.lifecycle.GetCapacity,
            convert(request, lifecycle_pb2.GetCapacityRequest),
            context,
            retry=Retry.SAFE,
        )
        return operations_pb2.GetCapacityResponse(
            level=view.level,
            members=view.members,
            member_capacity=view.member_capacity,
            group_sets=view.group_sets,
            group_set_capacity=view.group_set_capacity,
            extra_members=view.extra_members,
            utilisation_bp=view.utilisation_bp,
            history=[operations_pb2.MonthLevel(month=h.month, level=h.level) for h in view.history],
        )

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
        listed = await self.backends.call(
            self.backends.lifecycle.ListAuditEntries,
            convert(request, lifecycle_pb2.ListAuditEntriesRequest),
            context,
            retry=Retry.SAFE,
        )
        return convert(listed, operations_pb2.ListAuditEntriesResponse)

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


def _entries(module: discovery.Module) -> list[operations_pb2.ModuleEntry]:
    return [
        operations_pb2.ModuleEntry(
            group_set_id=e.candidate.group_set_id,
            name=e.candidate.name,
            shown=e.shown,
            reasons=[r.to_proto() for r in e.reasons],
        )
        for e in module.entries
    ]


class Discovery(operations_pb2_grpc.DiscoveryServiceServicer):
    def __init__(self, backends: Backends, rules: Rules, clock: Clock) -> None:
        self.backends = backends
        self.rules = rules
        self.clock = clock

    async def _candidates(
        self, store_id: str, consumer: Principal, context: grpc.aio.ServicerContext
    ) -> tuple[list[discovery.Candidate], lifecycle_pb2.ListCandidatesResponse]:
        listed = await self.backends.call(
            self.backends.lifecycle.ListCandidates,
            lifecycle_pb2.ListCandidatesRequest(store_id=store_id, consumer_id=consumer.subject),
            context,
            retry=Retry.SAFE,
        )
        verdicts = await asyncio.gather(
            *(self.backends.join_verdict(consumer.subject, c.group_set, context) for c in listed.candidates)
        )
        candidates = [
            discovery.Candidate(
                group_set_id=c.group_set.group_set_id,
                name=c.group_set.name,
                threshold=THRESHOLD_KINDS[c.group_set.threshold.WhichOneof("rule") or "follow"],
                member_count=c.group_set.member_count,
                full=c.full,
                failures=tuple(failures_of(v.verdict)),
            )
            for c, v in zip(listed.candidates, verdicts, strict=True)
        ]
        return candidates, listed

    @staticmethod
    def _consumer(store_id: str) -> Principal:
        fields = Fields()
        fields.identifier("store_id", store_id)
        fields.done()
        principal = current_principal()
        principal.require(Role.CONSUMER)
        return principal

    async def GetStorePageModule(
        self, request: operations_pb2.GetStorePageModuleRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.GetStorePageModuleResponse:
        consumer = self._consumer(request.store_id)
        candidates, listed = await self._candidates(request.store_id, consumer, context)
        first = (
            listed.first_group_created_at.ToDatetime(tzinfo=self.clock.now().tzinfo)
            if listed.HasField("first_group_created_at")
            else None
        )
        module = discovery.store_page(
            candidates,
            consumer_in_store_group=listed.consumer_in_store_group,
            first_group_created_at=first,
            now=self.clock.now(),
            market=self.rules.calendar.market,
        )
        return operations_pb2.GetStorePageModuleResponse(
            entries=_entries(module), module_reasons=[r.to_proto() for r in module.module_reasons]
        )

    async def _running_group_buy(self, store_id: str, item_id: str, context: grpc.aio.ServicerContext) -> str:
        """V3: the group buy of this item that the campaigns service runs now ("" when none, or no item named)."""
        if not item_id:
            return ""
        found = await self.backends.call(
            self.backends.campaigns.GetItemGroupBuy,
            internal_campaigns.GetItemGroupBuyRequest(store_id=store_id, item_id=item_id),
            context,
            retry=Retry.SAFE,
        )
        return found.activity_id if found.in_group_buy else ""

    async def GetItemPageModule(
        self, request: operations_pb2.GetItemPageModuleRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.GetItemPageModuleResponse:
        consumer = self._consumer(request.store_id)
        fields = Fields()
        fields.identifier("item_id", request.item_id, required=False)
        fields.done()
        # V3: hidden when the caller says the item is in a group buy, or a group buy of it runs in qun.
        (candidates, listed), group_buy = await asyncio.gather(
            self._candidates(request.store_id, consumer, context),
            self._running_group_buy(request.store_id, request.item_id, context),
        )
        module = discovery.item_page(
            candidates,
            in_group_buy=request.in_group_buy,
            consumer_in_store_group=listed.consumer_in_store_group,
            group_buy_activity_id=group_buy,
        )
        return operations_pb2.GetItemPageModuleResponse(
            entries=_entries(module), module_reasons=[r.to_proto() for r in module.module_reasons]
        )

    async def RecommendAfterPurchase(
        self, request: operations_pb2.RecommendAfterPurchaseRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.RecommendAfterPurchaseResponse:
        consumer = self._consumer(request.store_id)
        candidates, listed = await self._candidates(request.store_id, consumer, context)
        best, module = discovery.recommend(candidates, consumer_in_store_group=listed.consumer_in_store_group)
        return operations_pb2.RecommendAfterPurchaseResponse(
            group_set_id=best.group_set_id if best else "",
            name=best.name if best else "",
            considered=_entries(module),
            module_reasons=[r.to_proto() for r in module.module_reasons],
        )

    async def CheckPostComponent(
        self, request: operations_pb2.CheckPostComponentRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.CheckPostComponentResponse:
        fields = Fields()
        fields.identifier("group_set_id", request.group_set_id)
        fields.done()
        principal = current_principal()
        found = await self.backends.group_set(request.group_set_id, context)
        is_main = principal.role is Role.STORE_MAIN and principal.subject == found.owner_account_id
        failures = discovery.post_component_failures(caller_is_main_account=is_main, is_public=found.is_public)
        return operations_pb2.CheckPostComponentResponse(verdict=verdict(failures))

    async def CheckMessage(
        self, request: operations_pb2.CheckMessageRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.CheckMessageResponse:
        current_principal().require(Role.UPSTREAM)
        fields = Fields()
        fields.identifier("group_set_id", request.group_set_id)
        fields.identifier("sender_id", request.sender_id)
        fields.enum("kind", request.kind, operations_pb2.MessageKind)
        if request.kind == operations_pb2.MESSAGE_KIND_ITEM_SHARE:
            fields.enum("item_interaction", request.item_interaction, operations_pb2.ItemInteraction)
        if request.video_seconds < 0:
            fields.fail("video_seconds", "must not be negative")
        fields.done()
        found = await self.backends.group_set(request.group_set_id, context)
        # The owner and super admins are exempt from the bar (C2): never hidden, as their join says (C3).
        staff = is_staff_account(request.sender_id, found)
        member = staff
        hidden = False
        if not staff:
            try:
                await self.backends.call(
                    self.backends.groups.GetMembership,
                    groups_pb2.GetMembershipRequest(group_set_id=found.group_set_id, consumer_id=request.sender_id),
                    context,
                    retry=Retry.SAFE,
                )
                member = True
            except Relayed as error:
                if error.code is not grpc.StatusCode.NOT_FOUND:
                    raise
        if member and not staff:
            # C3: the score is read now, not at join: a member who fell below the bar is hidden.
            standing = await self.backends.join_verdict(request.sender_id, found, context)
            hidden = standing.below_score_bar
        failures = discovery.message_failures(
            self.rules,
            kind=MESSAGE_KINDS[request.kind],
            sender_is_member=member,
            sender_is_staff=staff,
            item_known_to_sender=request.item_interaction in KNOWN_INTERACTIONS,
            video_seconds=request.video_seconds,
        )
        if any(f.reason == "NOT_IN_GROUP" for f in failures):
            raise NotFound("membership", f"{request.group_set_id}/{request.sender_id}")
        return operations_pb2.CheckMessageResponse(
            verdict=verdict(failures), hidden_from_others=hidden and not failures
        )
