"""The public CampaignService: role rules, then the campaigns flows (SPEC M1–M13).

Backends never call each other, so what the campaigns service needs from the
groups service travels in the request, fetched here: membership of the
activity's group-set (M5 for the flash price; the other tools are the
group's too), the group-set's owner and admins (who run activities), its
sub-groups and the store's group level (M12). Every refusal from either side
reaches the caller with its rule ids and figures unchanged.

Public and internal messages are separate contracts with the same field
names; ``convert`` (``gateway.convert``) copies one into the other by name, so
internal fields never leave the gateway and a caller can never set one
(membership, level, actor).

An activity's group-set never changes, so the gateway keeps it once the
campaigns service named it: a flash purchase asks the groups service for the
membership and the campaigns service for the purchase, two backend calls.

V1: a group-set that is not public appears nowhere, its activities included.
``GetActivity`` and ``ListActivities`` show such a set's activities only to
its members, its staff (the owner and super admins) and ops; to anyone else
the activity does not exist (NOT_FOUND, or left out of the list), so not even
the set's id leaks. Whether a set is public comes from the groups service,
kept a few seconds per set (``GroupSetViews``), so a set made private stops
showing within that time.

Kept as one module (about 540 lines): one public service of many RPCs, each a role rule and
a forward; what differs per campaign kind is declared in ``services.campaigns.kinds``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.access import STORE_ROLES, is_owner, is_staff, require_store_scope, require_store_staff
from gateway.auth import Principal, Role, current_principal
from gateway.backends import Backends, Retry
from gateway.caches import GroupSetViews, Kept
from gateway.convert import convert
from gateway.downstream import Relayed
from qun.campaigns.v1 import campaigns_pb2 as internal
from qun.common.v1 import groups_pb2 as common_groups_pb2
from qun.gateway.v1 import campaigns_pb2 as public
from qun.gateway.v1 import campaigns_pb2_grpc as public_grpc
from qun.groups.v1 import groups_pb2
from services.campaigns import kinds as campaign_kinds
from services.common.errors import Failure, InvalidArgument, NotFound, PermissionDenied, RuleRefusal
from services.common.validation import Fields, int64_digits

# Who runs activities: the group-set's owner (the store's main account) and its super admins.
ACTIVITY_ROLES = (Role.STORE_MAIN, Role.STORE_SUB, Role.STREAMER)
END_CARD_POLL_SECONDS = 0.5
END_CARD_PAGE = 100
ACTIVITY_SETS_KEPT = 10_000


class ActivitySets:
    """The group-set each activity runs in, as the campaigns service answered: it never changes, so it is kept.

    Only that: whether the activity still runs (or anything else that changes)
    is the campaigns service's to check on every call. Keyed by store and
    activity, as GetActivity is asked; the least recently used go first.
    """

    def __init__(self, max_entries: int = ACTIVITY_SETS_KEPT) -> None:
        self._kept: Kept[tuple[str, str], str] = Kept(max_entries)

    def get(self, store_id: str, activity_id: str) -> str | None:
        return self._kept.get((store_id, activity_id))

    def put(self, store_id: str, activity_id: str, group_set_id: str) -> None:
        self._kept.put((store_id, activity_id), group_set_id)


def page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def seq_from_token(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, value = text.partition(":")
        seq = int64_digits(value)
        if prefix == "seq" and seq is not None:
            return seq
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise InvalidArgument.one("page_token", "not a token returned by this service")


class CampaignService(public_grpc.CampaignServiceServicer):
    def __init__(
        self,
        backends: Backends,
        *,
        poll_seconds: float = END_CARD_POLL_SECONDS,
    ) -> None:
        self.backends = backends
        self.poll_seconds = poll_seconds
        self.activity_sets = ActivitySets()
        self.group_sets = GroupSetViews()  # V1's is_public per set, kept a few seconds

    # -- what other services know ------------------------------------------------------------

    async def _activity_set(self, store_id: str, activity_id: str, context: grpc.aio.ServicerContext) -> str:
        """The group-set the activity runs in; NOT_FOUND (from the campaigns service) for an unknown activity."""
        group_set_id = self.activity_sets.get(store_id, activity_id)
        if group_set_id is None:
            found = await self.backends.call(
                self.backends.campaigns.GetActivity,
                internal.GetActivityRequest(store_id=store_id, activity_id=activity_id),
                context,
                retry=Retry.SAFE,
            )
            group_set_id = found.activity.group_set_id
            self.activity_sets.put(store_id, activity_id, group_set_id)
        return group_set_id

    async def _kept_group_set(self, group_set_id: str, context: grpc.aio.ServicerContext) -> groups_pb2.GroupSet | None:
        """The group-set as the groups service answered a few seconds ago at most; None when it is gone."""
        found = self.group_sets.get(group_set_id)
        if found is None:
            try:
                found = await self.backends.group_set(group_set_id, context)
            except Relayed as error:
                if error.code is grpc.StatusCode.NOT_FOUND:
                    return None
                raise
            self.group_sets.put(found)
        return found

    async def _may_see(
        self, principal: Principal, store_id: str, group_set_id: str, context: grpc.aio.ServicerContext
    ) -> bool:
        """V1: a public set's activities show to anyone; a set that is not public shows to its members, its
        staff (owner, super admins) and ops only. A set that no longer exists shows to ops and the store's
        own accounts (its activities are still the store's books)."""
        if principal.role is Role.OPS:
            return True
        found = await self._kept_group_set(group_set_id, context)
        if found is None:
            return principal.role in STORE_ROLES and principal.store_id == store_id
        if found.is_public or is_staff(principal, found):
            return True
        if principal.role is Role.CONSUMER:
            return await self._is_member(group_set_id, principal.subject, context)
        return False

    async def _is_member(self, group_set_id: str, consumer_id: str, context: grpc.aio.ServicerContext) -> bool:
        """M5: the groups service says NOT_FOUND when the consumer is in no sub-group of the set."""
        try:
            await self.backends.call(
                self.backends.groups.GetMembership,
                groups_pb2.GetMembershipRequest(group_set_id=group_set_id, consumer_id=consumer_id),
                context,
                retry=Retry.SAFE,
            )
        except Relayed as error:
            if error.code is grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def _activity_member(
        self, store_id: str, activity_id: str, consumer: Principal, context: grpc.aio.ServicerContext
    ) -> bool:
        group_set_id = await self._activity_set(store_id, activity_id, context)
        return await self._is_member(group_set_id, consumer.subject, context)

    async def _staff_set(
        self, group_set_id: str, principal: Principal, context: grpc.aio.ServicerContext
    ) -> groups_pb2.GroupSet:
        """The group-set, when the caller is its owner or one of its super admins (R1, R2)."""
        principal.require(*ACTIVITY_ROLES, why="activities are run by the group-set's owner and super admins")
        found = await self.backends.group_set(group_set_id, context)
        if not is_staff(principal, found):
            raise PermissionDenied("only the group-set's owner and super admins run its activities", rule_id="R2")
        if not found.store_id:
            raise InvalidArgument.one("group_set_id", "campaigns run in a store's group-sets; this one has no store")
        return found

    @staticmethod
    def _consumer() -> Principal:
        principal = current_principal()
        principal.require(Role.CONSUMER)
        return principal

    @staticmethod
    def _ids(**ids: str) -> None:
        fields = Fields()
        for name, value in ids.items():
            fields.identifier(name, value, required=name != "request_id")
        fields.done()

    # -- items and stock (upstream) ----------------------------------------------------------

    async def ReportItem(
        self, request: public.ReportItemRequest, context: grpc.aio.ServicerContext
    ) -> public.ReportItemResponse:
        current_principal().require(Role.UPSTREAM)
        reply = await self.backends.call(
            self.backends.campaigns.UpsertItem, convert(request, internal.UpsertItemRequest), context, retry=Retry.SAFE
        )
        return public.ReportItemResponse(item=convert(reply.item, public.Item), created=reply.created)

    async def Restock(
        self, request: public.RestockRequest, context: grpc.aio.ServicerContext
    ) -> public.RestockResponse:
        principal = current_principal()
        if principal.role is not Role.UPSTREAM:
            principal.require(Role.UPSTREAM, Role.STORE_MAIN)
            if principal.store_id != request.store_id:
                raise PermissionDenied("the token's store is not this store")
        reply = await self.backends.call(
            self.backends.campaigns.Restock, convert(request, internal.RestockRequest), context, retry=Retry.SAFE
        )
        return public.RestockResponse(item=convert(reply.item, public.Item))

    async def CancelPurchase(
        self, request: public.CancelPurchaseRequest, context: grpc.aio.ServicerContext
    ) -> public.CancelPurchaseResponse:
        current_principal().require(Role.UPSTREAM, why="order cancellations are reported by the order system")
        reply = await self.backends.call(
            self.backends.campaigns.CancelPurchase,
            convert(request, internal.CancelPurchaseRequest),
            context,
            retry=Retry.SAFE,
        )
        return public.CancelPurchaseResponse(purchase=convert(reply.purchase, public.PurchaseRecord), stock=reply.stock)

    async def GetItem(
        self, request: public.GetItemRequest, context: grpc.aio.ServicerContext
    ) -> public.GetItemResponse:
        reply = await self.backends.call(
            self.backends.campaigns.GetItem, convert(request, internal.GetItemRequest), context, retry=Retry.SAFE
        )
        return public.GetItemResponse(item=convert(reply.item, public.Item))

    async def ListSales(
        self, request: public.ListSalesRequest, context: grpc.aio.ServicerContext
    ) -> public.ListSalesResponse:
        require_store_scope(current_principal(), request.store_id, *STORE_ROLES, anywhere=(Role.UPSTREAM,))
        reply = await self.backends.call(
            self.backends.campaigns.ListSales, convert(request, internal.ListSalesRequest), context, retry=Retry.SAFE
        )
        return convert(reply, public.ListSalesResponse)

    # -- activities (merchant) ---------------------------------------------------------------

    async def CreateActivity(
        self, request: public.CreateActivityRequest, context: grpc.aio.ServicerContext
    ) -> public.CreateActivityResponse:
        self._ids(group_set_id=request.group_set_id, request_id=request.request_id)
        principal = current_principal()
        found = await self._staff_set(request.group_set_id, principal, context)
        declared = campaign_kinds.of_spec(request.WhichOneof("spec"))
        if declared is not None and declared.live_groups_only and found.kind != common_groups_pb2.GROUP_KIND_LIVE:
            raise RuleRefusal(
                [
                    Failure(
                        declared.rule_id,
                        "LIVE_FAN_GROUPS_ONLY",
                        "live lucky red packets go to the iron fans and above of a live fan group",
                        {"group_set_id": found.group_set_id},
                    )
                ]
            )
        forwarded = convert(
            request, internal.CreateActivityRequest, store_id=found.store_id, created_by=principal.subject
        )
        reply = await self.backends.call(
            self.backends.campaigns.CreateActivity, forwarded, context, retry=Retry.with_request_id(request.request_id)
        )
        return convert(reply, public.CreateActivityResponse)

    async def CreateTrumpet(
        self, request: public.CreateTrumpetRequest, context: grpc.aio.ServicerContext
    ) -> public.CreateTrumpetResponse:
        principal = current_principal()
        principal.require(Role.STORE_MAIN, rule_id="M12", why="only the store's main account sets a trumpet")
        self._ids(activity_id=request.activity_id, group_id=request.group_id, request_id=request.request_id)
        group_set_id = await self._activity_set(principal.store_id, request.activity_id, context)
        found = await self.backends.group_set(group_set_id, context)
        if not is_owner(principal, found):
            raise PermissionDenied("only the store's main account sets a trumpet", rule_id="M12")
        sub_groups = {s.sub_group_id for s in found.sub_groups}
        if request.group_id != found.group_set_id and request.group_id not in sub_groups:
            raise NotFound("sub_group", request.group_id)
        level = await self.backends.call(
            self.backends.groups.GetGroupLevel,
            groups_pb2.GetGroupLevelRequest(store_id=found.store_id),
            context,
            retry=Retry.SAFE,
        )
        forwarded = convert(
            request,
            internal.CreateTrumpetRequest,
            store_id=found.store_id,
            sub_group_id=request.group_id,
            on_sub_group=request.group_id in sub_groups,
            group_level=level.level,
            created_by=principal.subject,
        )
        reply = await self.backends.call(
            self.backends.campaigns.CreateTrumpet, forwarded, context, retry=Retry.with_request_id(request.request_id)
        )
        return public.CreateTrumpetResponse(trumpet=convert(reply.trumpet, public.Trumpet))

    async def EndActivity(
        self, request: public.EndActivityRequest, context: grpc.aio.ServicerContext
    ) -> public.EndActivityResponse:
        self._ids(store_id=request.store_id, activity_id=request.activity_id)
        principal = current_principal()
        group_set_id = await self._activity_set(request.store_id, request.activity_id, context)
        await self._staff_set(group_set_id, principal, context)
        reply = await self.backends.call(
            self.backends.campaigns.EndActivity,
            convert(request, internal.EndActivityRequest),
            context,
            retry=Retry.SAFE,
        )
        return convert(reply, public.EndActivityResponse)

    async def GetActivity(
        self, request: public.GetActivityRequest, context: grpc.aio.ServicerContext
    ) -> public.GetActivityResponse:
        principal = current_principal()
        reply = await self.backends.call(
            self.backends.campaigns.GetActivity,
            convert(request, internal.GetActivityRequest),
            context,
            retry=Retry.SAFE,
        )
        found = reply.activity
        self.activity_sets.put(found.store_id, found.activity_id, found.group_set_id)
        if not await self._may_see(principal, found.store_id, found.group_set_id, context):
            # V1: as if there were no such activity (the campaigns service's own answer for one).
            raise NotFound("activity", f"{request.store_id}/{request.activity_id}")
        return convert(reply, public.GetActivityResponse)

    async def ListActivities(
        self, request: public.ListActivitiesRequest, context: grpc.aio.ServicerContext
    ) -> public.ListActivitiesResponse:
        """V1: the activities of sets the caller may not see are left out (a page may come back shorter)."""
        principal = current_principal()
        reply = await self.backends.call(
            self.backends.campaigns.ListActivities,
            convert(request, internal.ListActivitiesRequest),
            context,
            retry=Retry.SAFE,
        )
        sets = sorted({a.group_set_id for a in reply.activities})
        seen = await asyncio.gather(*(self._may_see(principal, request.store_id, s, context) for s in sets))
        visible = {s for s, shown in zip(sets, seen, strict=True) if shown}
        return public.ListActivitiesResponse(
            activities=[convert(a, public.Activity) for a in reply.activities if a.group_set_id in visible],
            next_page_token=reply.next_page_token,
        )

    async def GetFlashSaleResults(
        self, request: public.GetFlashSaleResultsRequest, context: grpc.aio.ServicerContext
    ) -> public.GetFlashSaleResultsResponse:
        require_store_staff(current_principal(), request.store_id)
        reply = await self.backends.call(
            self.backends.campaigns.GetFlashSaleResults,
            convert(request, internal.GetFlashSaleResultsRequest),
            context,
            retry=Retry.SAFE,
        )
        return convert(reply, public.GetFlashSaleResultsResponse)

    async def ListRefunds(
        self, request: public.ListRefundsRequest, context: grpc.aio.ServicerContext
    ) -> public.ListRefundsResponse:
        require_store_staff(current_principal(), request.store_id)
        reply = await self.backends.call(
            self.backends.campaigns.ListRefunds,
            convert(request, internal.ListRefundsRequest),
            context,
            retry=Retry.SAFE,
        )
        return convert(reply, public.ListRefundsResponse)

    # -- consumers ---------------------------------------------------------------------------

    async def _order_membership(self, request: Any, consumer: Principal, context: grpc.aio.ServicerContext) -> bool:
        """M5: the flash price needs membership of the sale's group-set; a normal sale does not."""
        self._ids(store_id=request.store_id)
        flash_sale_id = request.order.flash_sale_id
        if not flash_sale_id:
            return False
        self._ids(**{"order.flash_sale_id": flash_sale_id})
        return await self._activity_member(request.store_id, flash_sale_id, consumer, context)

    async def PriceOrder(
        self, request: public.PriceOrderRequest, context: grpc.aio.ServicerContext
    ) -> public.PriceOrderResponse:
        consumer = self._consumer()
        member = await self._order_membership(request, consumer, context)
        forwarded = convert(request, internal.PriceOrderRequest, consumer_id=consumer.subject, group_member=member)
        reply = await self.backends.call(self.backends.campaigns.PriceOrder, forwarded, context, retry=Retry.SAFE)
        return convert(reply, public.PriceOrderResponse)

    async def Purchase(
        self, request: public.PurchaseRequest, context: grpc.aio.ServicerContext
    ) -> public.PurchaseResponse:
        consumer = self._consumer()
        member = await self._order_membership(request, consumer, context)
        forwarded = convert(request, internal.PurchaseRequest, consumer_id=consumer.subject, group_member=member)
        reply = await self.backends.call(
            self.backends.campaigns.Purchase, forwarded, context, retry=Retry.with_request_id(request.request_id)
        )
        return public.PurchaseResponse(
            purchase=convert(reply.purchase, public.PurchaseRecord), stock_left=reply.stock_left
        )

    async def GetPurchase(
        self, request: public.GetPurchaseRequest, context: grpc.aio.ServicerContext
    ) -> public.GetPurchaseResponse:
        principal = current_principal()
        if principal.role is not Role.CONSUMER:
            require_store_scope(principal, request.store_id, *STORE_ROLES, anywhere=(Role.UPSTREAM,))
        reply = await self.backends.call(
            self.backends.campaigns.GetPurchase,
            convert(request, internal.GetPurchaseRequest),
            context,
            retry=Retry.SAFE,
        )
        if principal.role is Role.CONSUMER and reply.purchase.consumer_id != principal.subject:
            raise NotFound("purchase", f"{request.store_id}/{request.purchase_id}")
        return public.GetPurchaseResponse(purchase=convert(reply.purchase, public.PurchaseRecord))

    async def ClaimPrize(
        self, request: public.ClaimPrizeRequest, context: grpc.aio.ServicerContext
    ) -> public.ClaimPrizeResponse:
        consumer = self._consumer()
        self._ids(store_id=request.store_id, activity_id=request.activity_id, request_id=request.request_id)
        member = await self._activity_member(request.store_id, request.activity_id, consumer, context)
        forwarded = convert(request, internal.ClaimPrizeRequest, consumer_id=consumer.subject, group_member=member)
        reply = await self.backends.call(
            self.backends.campaigns.ClaimPrize, forwarded, context, retry=Retry.with_request_id(request.request_id)
        )
        return public.ClaimPrizeResponse(claim=convert(reply.claim, public.Claim))

    async def ListMyWallet(
        self, request: public.ListMyWalletRequest, context: grpc.aio.ServicerContext
    ) -> public.ListMyWalletResponse:
        consumer = self._consumer()
        forwarded = convert(request, internal.ListWalletRequest, consumer_id=consumer.subject)
        reply = await self.backends.call(self.backends.campaigns.ListWallet, forwarded, context, retry=Retry.SAFE)
        return convert(reply, public.ListMyWalletResponse)

    async def Vote(self, request: public.VoteRequest, context: grpc.aio.ServicerContext) -> public.VoteResponse:
        consumer = self._consumer()
        self._ids(store_id=request.store_id, activity_id=request.activity_id)
        member = await self._activity_member(request.store_id, request.activity_id, consumer, context)
        forwarded = convert(request, internal.VoteRequest, consumer_id=consumer.subject, group_member=member)
        reply = await self.backends.call(self.backends.campaigns.Vote, forwarded, context, retry=Retry.SAFE)
        return convert(reply, public.VoteResponse)

    async def CheckIn(
        self, request: public.CheckInRequest, context: grpc.aio.ServicerContext
    ) -> public.CheckInResponse:
        consumer = self._consumer()
        self._ids(store_id=request.store_id, activity_id=request.activity_id)
        member = await self._activity_member(request.store_id, request.activity_id, consumer, context)
        forwarded = convert(request, internal.CheckInRequest, consumer_id=consumer.subject, group_member=member)
        reply = await self.backends.call(self.backends.campaigns.CheckIn, forwarded, context, retry=Retry.SAFE)
        return public.CheckInResponse(
            day=reply.day, days_checked_in=reply.days_checked_in, already_checked_in=reply.replayed
        )

    # -- end cards (M6) ----------------------------------------------------------------------

    async def _end_card_reader(self, store_id: str, group_set_id: str, context: grpc.aio.ServicerContext) -> None:
        """The store's accounts read every card of the store; a consumer those of a group-set they are in."""
        principal = current_principal()
        self._ids(store_id=store_id)
        if principal.role is not Role.CONSUMER:
            require_store_staff(principal, store_id)
            return
        if not group_set_id:
            raise InvalidArgument.one("group_set_id", "required: end cards are posted to a group-set's members")
        self._ids(group_set_id=group_set_id)
        if not await self._is_member(group_set_id, principal.subject, context):
            raise PermissionDenied("end cards are posted to the group-set's members", rule_id="M6")

    async def _cards(
        self, store_id: str, group_set_id: str, after_seq: int, limit: int, context: grpc.aio.ServicerContext
    ) -> internal.ListEndCardsResponse:
        return await self.backends.call(
            self.backends.campaigns.ListEndCards,
            internal.ListEndCardsRequest(
                store_id=store_id, group_set_id=group_set_id, after_seq=after_seq, page_size=limit
            ),
            context,
            retry=Retry.SAFE,
        )

    async def ListEndCards(
        self, request: public.ListEndCardsRequest, context: grpc.aio.ServicerContext
    ) -> public.ListEndCardsResponse:
        await self._end_card_reader(request.store_id, request.group_set_id, context)
        fields = Fields()
        limit = fields.page_size("page_size", request.page_size)
        fields.done()
        reply = await self._cards(
            request.store_id, request.group_set_id, seq_from_token(request.page_token), limit, context
        )
        full = len(reply.end_cards) == limit
        return public.ListEndCardsResponse(
            end_cards=[convert(c, public.EndCard) for c in reply.end_cards],
            next_page_token=page_token(reply.last_seq) if full else "",
        )

    async def WatchEndCards(
        self, request: public.WatchEndCardsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[public.WatchEndCardsResponse]:
        await self._end_card_reader(request.store_id, request.group_set_id, context)
        if request.after_seq < 0:
            raise InvalidArgument.one("after_seq", f"must not be negative, got {request.after_seq}")
        after = request.after_seq
        while True:
            reply = await self._cards(request.store_id, request.group_set_id, after, END_CARD_PAGE, context)
            for card in reply.end_cards:
                yield public.WatchEndCardsResponse(end_card=convert(card, public.EndCard))
            after = reply.last_seq
            if len(reply.end_cards) < END_CARD_PAGE:
                await asyncio.sleep(self.poll_seconds)

    # -- ops ---------------------------------------------------------------------------------

    async def RunExpiry(
        self, request: public.RunExpiryRequest, context: grpc.aio.ServicerContext
    ) -> public.RunExpiryResponse:
        current_principal().require(Role.OPS)
        reply = await self.backends.call(
            self.backends.campaigns.RunExpiry, internal.RunExpiryRequest(), context, retry=Retry.SAFE
        )
        return convert(reply, public.RunExpiryResponse)
