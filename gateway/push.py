"""The public PushService: role rules, then the push flows (SPEC P1–P8, X3).

Backends never call each other, so the flow of a submission is here: the
store's figures from the eligibility service (subscribers, old-customer fans
per P3, recent broadcasts, revisit rate), a draft in the push service that
checks every rule, the audience streamed from eligibility into the draft in
chunks (never one large message), then the seal that spends the quota. The
quota ledger and the notices read the same figures first, so a recall chance
earned is noticed (P4) whenever the account's figures pass through; fact
reports that can earn one (orders, follows, broadcasts, revisit rates) pass
them through too (``RecallNotices``, an observer of the fact reports).

Kept as one module (about 440 lines): one public service; the submission flow (figures,
draft, audience stream, seal) is most of it and reads best in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import grpc

from gateway.access import STORE_ROLES
from gateway.auth import Principal, Role, current_principal
from gateway.backends import Backends, Retry
from gateway.convert import convert
from gateway.downstream import Relayed
from qun.common.v1 import facts_pb2
from qun.eligibility.v1 import eligibility_pb2
from qun.gateway.v1 import push_pb2 as public
from qun.gateway.v1 import push_pb2_grpc as public_grpc
from qun.push.v1 import push_pb2 as internal
from services.common.errors import PermissionDenied
from services.common.validation import Fields, require_ids
from services.push import kinds as push_kinds

log = logging.getLogger("qun.gateway.push")

AUDIENCE_CHUNK = 5000  # recipients per message, both from eligibility and into push
AUDIENCE_TIMEOUT_SECONDS = 300.0  # a whole audience (100,000 recipients) streamed and stored
OBSERVE_CONCURRENCY = 4

# Each kind's rule and audience, as the push service declares them (services.push.kinds).
RULE_OF_KIND: dict[int, str] = {public.PushKind.Value(d.proto_name): d.rule_id for d in push_kinds.DECLARATIONS}
AUDIENCE_OF_KIND: dict[int, eligibility_pb2.PushAudience.ValueType] = {
    public.PushKind.Value(d.proto_name): eligibility_pb2.PushAudience.Value(f"PUSH_AUDIENCE_{d.audience.name}")
    for d in push_kinds.DECLARATIONS
}
# Public and internal kinds share their numbers; states differ (internal drafts are never shown).
STATES = {
    internal.PUSH_STATE_PENDING_REVIEW: public.PUSH_STATE_PENDING_REVIEW,
    internal.PUSH_STATE_APPROVED: public.PUSH_STATE_APPROVED,
    internal.PUSH_STATE_SENDING: public.PUSH_STATE_SENDING,
    internal.PUSH_STATE_SENT: public.PUSH_STATE_SENT,
    internal.PUSH_STATE_REJECTED: public.PUSH_STATE_REJECTED,
    internal.PUSH_STATE_CANCELLED: public.PUSH_STATE_CANCELLED,
}
# Facts after which an account may newly meet a recall tier's conditions (P2, P4).
TIER_FACTS = ("paid_order", "follow", "broadcast", "revisit_rate")


def account_facts(found: eligibility_pb2.GetPushFactsResponse) -> internal.AccountFacts:
    """The figures a push submission is decided on, as the store's facts give them (revisit rate only when known)."""
    return convert(found, internal.AccountFacts)


def figures(facts: internal.AccountFacts) -> public.PushFigures:
    return convert(facts, public.PushFigures)


def push_message(msg: internal.Push) -> public.Push:
    return convert(
        msg, public.Push, state=STATES.get(msg.state, public.PUSH_STATE_UNSPECIFIED), figures=figures(msg.facts)
    )


class PushService(public_grpc.PushServiceServicer):
    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    # -- helpers -------------------------------------------------------------------------------

    async def _facts(self, store_id: str, context: grpc.aio.ServicerContext) -> eligibility_pb2.GetPushFactsResponse:
        return await self.backends.call(
            self.backends.eligibility.GetPushFacts,
            eligibility_pb2.GetPushFactsRequest(store_id=store_id),
            context,
            retry=Retry.SAFE,
        )

    @staticmethod
    def _store_to_read(requested: str) -> str:
        """Store accounts read their own store; ops name one."""
        principal = current_principal()
        fields = Fields()
        fields.identifier("store_id", requested, required=principal.role is Role.OPS)
        fields.done()
        if principal.role in STORE_ROLES:
            if requested and requested != principal.store_id:
                raise PermissionDenied("a store's accounts read only their own store's pushes")
            return principal.store_id
        principal.require(Role.STORE_MAIN, Role.STORE_SUB, Role.OPS)
        return requested

    async def _get(self, push_id: str, context: grpc.aio.ServicerContext) -> internal.Push:
        reply: internal.GetPushResponse = await self.backends.call(
            self.backends.push.GetPush, internal.GetPushRequest(push_id=push_id), context, retry=Retry.SAFE
        )
        return reply.push

    # -- submission (P1, P2, P5, P6) -------------------------------------------------------------

    async def SubmitPush(
        self, request: public.SubmitPushRequest, context: grpc.aio.ServicerContext
    ) -> public.SubmitPushResponse:
        fields = Fields()
        fields.enum("kind", request.kind, public.PushKind)
        fields.identifier("request_id", request.request_id, required=False)
        fields.done()
        principal = current_principal()
        principal.require(
            Role.STORE_MAIN,
            rule_id=RULE_OF_KIND[request.kind],
            why="only a store's main account (its content account) submits pushes",
        )
        # The token's account is the store's main account now: checked for every call (gateway.access).
        facts = account_facts(await self._facts(principal.store_id, context))
        draft = await self.backends.call(
            self.backends.push.CreateDraft,
            convert(
                request,
                internal.CreateDraftRequest,
                store_id=principal.store_id,
                account_id=principal.subject,
                facts=facts,
            ),
            context,
            retry=Retry.with_request_id(request.request_id),
        )
        if draft.replayed:
            return public.SubmitPushResponse(push=push_message(draft.push))
        push_id = draft.push.push_id
        try:
            await self._fill(principal, request.kind, push_id, draft.audience_limit, context)
            sealed = await self.backends.call(
                self.backends.push.SubmitDraft,
                internal.SubmitDraftRequest(store_id=principal.store_id, push_id=push_id),
                context,
                retry=Retry.NEVER,
            )
        except BaseException:
            await self._discard(principal.store_id, push_id)
            raise
        return public.SubmitPushResponse(push=push_message(sealed.push))

    async def _fill(
        self, principal: Principal, kind: int, push_id: str, limit: int, context: grpc.aio.ServicerContext
    ) -> None:
        """Streams the audience from eligibility into the draft, one chunk in memory at a time."""
        audience = self.backends.stream(
            self.backends.eligibility.StreamPushAudience,
            eligibility_pb2.StreamPushAudienceRequest(
                store_id=principal.store_id, audience=AUDIENCE_OF_KIND[kind], limit=limit, chunk_size=AUDIENCE_CHUNK
            ),
            context,
            budget=AUDIENCE_TIMEOUT_SECONDS,
        )
        async for chunk in audience:
            if not chunk.consumer_ids:
                continue
            await self.backends.call(
                self.backends.push.AppendAudience,
                internal.AppendAudienceRequest(
                    store_id=principal.store_id, push_id=push_id, recipient_ids=chunk.consumer_ids
                ),
                context,
                retry=Retry.SAFE,
            )

    async def _discard(self, store_id: str, push_id: str) -> None:
        try:
            await self.backends.best_effort(
                self.backends.push.DiscardDraft, internal.DiscardDraftRequest(store_id=store_id, push_id=push_id)
            )
        except Relayed as error:  # the push service drops abandoned drafts itself later
            log.warning("draft not discarded", extra={"fields": {"push_id": push_id, "code": error.code.name}})

    async def CancelPush(
        self, request: public.CancelPushRequest, context: grpc.aio.ServicerContext
    ) -> public.CancelPushResponse:
        require_ids(request, "push_id")
        principal = current_principal()
        principal.require(Role.STORE_MAIN, rule_id="P6", why="only the store's main account cancels its pushes")
        reply = await self.backends.call(
            self.backends.push.CancelPush,
            internal.CancelPushRequest(
                push_id=request.push_id, store_id=principal.store_id, account_id=principal.subject
            ),
            context,
            retry=Retry.NEVER,
        )
        return public.CancelPushResponse(push=push_message(reply.push))

    async def ReviewPush(
        self, request: public.ReviewPushRequest, context: grpc.aio.ServicerContext
    ) -> public.ReviewPushResponse:
        fields = Fields()
        fields.identifier("push_id", request.push_id)
        fields.enum("decision", request.decision, public.ReviewDecision)
        fields.done()
        principal = current_principal()
        principal.require(Role.OPS, rule_id="P6", why="only ops review pushes")
        reply = await self.backends.call(
            self.backends.push.ReviewPush,
            convert(request, internal.ReviewPushRequest, reviewer_id=principal.subject),
            context,
            retry=Retry.NEVER,
        )
        return public.ReviewPushResponse(push=push_message(reply.push))

    async def ListPendingReviews(
        self, request: public.ListPendingReviewsRequest, context: grpc.aio.ServicerContext
    ) -> public.ListPendingReviewsResponse:
        """P8: ops' one queue across stores, oldest submission first, each with its window's end."""
        current_principal().require(Role.OPS, rule_id="P8", why="the review queue is ops'")
        fields = Fields()
        fields.identifier("store_id", request.store_id, required=False)
        if request.kind:
            fields.enum("kind", request.kind, public.PushKind)
        fields.done()
        reply = await self.backends.call(
            self.backends.push.ListPendingReviews,
            convert(request, internal.ListPendingReviewsRequest),
            context,
            retry=Retry.SAFE,
        )
        reviews = [convert(r, public.PendingReview, push=push_message(r.push)) for r in reply.reviews]
        return convert(reply, public.ListPendingReviewsResponse, reviews=reviews)

    # -- reads ------------------------------------------------------------------------------------

    async def GetPush(
        self, request: public.GetPushRequest, context: grpc.aio.ServicerContext
    ) -> public.GetPushResponse:
        require_ids(request, "push_id")
        principal = current_principal()
        principal.require(Role.STORE_MAIN, Role.STORE_SUB, Role.OPS)
        found = await self._get(request.push_id, context)
        if principal.role in STORE_ROLES and found.store_id != principal.store_id:
            raise PermissionDenied("a store's accounts read only their own store's pushes")
        return public.GetPushResponse(push=push_message(found))

    async def ListPushes(
        self, request: public.ListPushesRequest, context: grpc.aio.ServicerContext
    ) -> public.ListPushesResponse:
        store_id = self._store_to_read(request.store_id)
        reply = await self.backends.call(
            self.backends.push.ListPushes,
            convert(request, internal.ListPushesRequest, store_id=store_id),
            context,
            retry=Retry.SAFE,
        )
        return convert(reply, public.ListPushesResponse, pushes=[push_message(p) for p in reply.pushes])

    async def GetQuotaLedger(
        self, request: public.GetQuotaLedgerRequest, context: grpc.aio.ServicerContext
    ) -> public.GetQuotaLedgerResponse:
        store_id = self._store_to_read(request.store_id)
        facts = account_facts(await self._facts(store_id, context))
        reply = await self.backends.call(
            self.backends.push.GetQuotaLedger,
            internal.GetQuotaLedgerRequest(store_id=store_id, facts=facts),
            context,
            retry=Retry.SAFE,
        )
        return convert(reply, public.GetQuotaLedgerResponse, store_id=store_id, figures=figures(reply.facts))

    async def ListPushNotices(
        self, request: public.ListPushNoticesRequest, context: grpc.aio.ServicerContext
    ) -> public.ListPushNoticesResponse:
        store_id = self._store_to_read(request.store_id)
        facts = account_facts(await self._facts(store_id, context))
        await self.backends.call(
            self.backends.push.ObserveAccount,
            internal.ObserveAccountRequest(store_id=store_id, facts=facts),
            context,
            retry=Retry.SAFE,
        )
        reply = await self.backends.call(
            self.backends.push.ListNotices,
            convert(request, internal.ListNoticesRequest, store_id=store_id),
            context,
            retry=Retry.SAFE,
        )
        return convert(reply, public.ListPushNoticesResponse)

    # -- grants (P5) -------------------------------------------------------------------------------

    async def GrantMassSend(
        self, request: public.GrantMassSendRequest, context: grpc.aio.ServicerContext
    ) -> public.GrantMassSendResponse:
        require_ids(request, "store_id")
        principal = current_principal()
        principal.require(Role.OPS, Role.UPSTREAM, rule_id="P5", why="mass-send grants come from official activities")
        await self._facts(request.store_id, context)  # NOT_FOUND for a store nobody reported
        reply = await self.backends.call(
            self.backends.push.GrantMassSend,
            convert(request, internal.GrantMassSendRequest, granted_by=principal.subject),
            context,
            retry=Retry.with_request_id(request.request_id),
        )
        return convert(reply, public.GrantMassSendResponse)

    # -- the delivery ledger (P7) -----------------------------------------------------------------

    async def StreamDeliveries(
        self, request: public.StreamDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[public.StreamDeliveriesResponse]:
        current_principal().require(Role.UPSTREAM, rule_id="P7", why="the delivery ledger is for notification systems")
        deliveries = self.backends.stream(
            self.backends.push.StreamDeliveries,
            convert(request, internal.StreamDeliveriesRequest),
            context,
        )
        async for item in deliveries:
            yield convert(item, public.StreamDeliveriesResponse)


class RecallNotices:
    """P4 on fact reports: facts that can earn a recall chance pass the store's figures to push.

    A ``FactService`` observer. Best effort: the report is already applied,
    and the ledger and notices read the same figures again, so a notice missed
    here is noticed on the store's next read.
    """

    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def __call__(self, facts: Sequence[facts_pb2.Fact], context: grpc.aio.ServicerContext) -> None:
        stores = sorted(
            {getattr(fact, which).store_id for fact in facts if (which := fact.WhichOneof("fact")) in TIER_FACTS}
        )
        limit = asyncio.Semaphore(OBSERVE_CONCURRENCY)

        async def one(store_id: str) -> None:
            async with limit:
                try:
                    found = await self.backends.best_effort(
                        self.backends.eligibility.GetPushFacts, eligibility_pb2.GetPushFactsRequest(store_id=store_id)
                    )
                    await self.backends.best_effort(
                        self.backends.push.ObserveAccount,
                        internal.ObserveAccountRequest(store_id=store_id, facts=account_facts(found)),
                    )
                except Relayed as error:
                    if error.code is not grpc.StatusCode.NOT_FOUND:  # orders of a store not reported yet
                        log.warning(
                            "push notices not observed",
                            extra={"fields": {"store_id": store_id, "code": error.code.name}},
                        )

        await asyncio.gather(*(one(s) for s in stores))
