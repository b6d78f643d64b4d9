"""The public DiscoveryService (SPEC V1–V6, C3, R4): the official modules' choices and the message policy.

Role rules first; then the groups service for state, the eligibility service
for verdicts (run concurrently, one per candidate group-set), the campaigns
service for whether an item is in a group buy (V3), and the plain functions
of ``gateway.discovery`` to choose.
"""

from __future__ import annotations

import asyncio

import grpc

from gateway import discovery
from gateway.access import is_staff_account
from gateway.auth import Principal, Role, current_principal
from gateway.backends import Backends, Retry
from gateway.downstream import Relayed
from qun.campaigns.v1 import campaigns_pb2 as internal_campaigns
from qun.gateway.v1 import operations_pb2, operations_pb2_grpc
from qun.groups.v1 import groups_pb2, lifecycle_pb2
from services.common.clock import Clock
from services.common.errors import NotFound, failures_of, verdict
from services.common.rules import Rules
from services.common.validation import Fields, require_ids

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
        require_ids(request, optional=("item_id",))
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
        require_ids(request, "group_set_id")
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
