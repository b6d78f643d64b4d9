"""The PushService RPCs: validate the whole request, run one transaction, answer.

Input is checked field by field before anything touches the database (one
INVALID_ARGUMENT naming every bad field); rule refusals carry every failed
rule with its figures (SPEC X1); metrics are counted after the commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TypeVar

import grpc
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from qun.push.v1 import push_pb2, push_pb2_grpc
from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import Aborted, RuleRefusal
from services.common.messages import message_from
from services.common.page_tokens import decode_keyset, encode_keyset
from services.common.races import retry_lost_race
from services.common.rules import Rules
from services.common.timestamps import to_timestamp
from services.common.validation import ID_PATTERN, MAX_NAME_CHARS, MAX_TEXT_CHARS, Fields, require_ids, require_page
from services.push import metrics
from services.push import rules as domain
from services.push.convert import (
    KIND_PROTOS,
    KINDS,
    facts_to_proto,
    grant_to_proto,
    notice_to_proto,
    parse_cursor,
    parse_facts,
    push_to_proto,
)
from services.push.deliveries import Deliveries
from services.push.drafts import DraftResult, Drafts, NewDraft
from services.push.kinds import grant_misuse
from services.push.models import GrantRow, NoticeRow, PushRow
from services.push.quotas import Quotas
from services.push.repository import PushUnit
from services.push.reviews import Reviews
from services.push.rules import AccountFacts, PushKind, PushState

log = logging.getLogger("qun.push")
U = TypeVar("U", bound=PushUnit)

MAX_BODY_CHARS = MAX_TEXT_CHARS  # a push message is at most 2,000 characters
# Not callers' values, so not [bounds] (D2): the size of the gateway's own audience chunks (it sends 5,000),
# the ledger's read page (and the figures' limits in ``convert``).
MAX_APPEND_IDS = 20_000
LEDGER_PAGE = 50
# StreamDeliveries' default chunk; a caller's chunk_size is bounded by bounds.delivery_chunk (D2).
DELIVERY_CHUNK = 1000
FOLLOW_POLL_SECONDS = 0.5


class PushServiceServicer(push_pb2_grpc.PushServiceServicer):
    def __init__(self, db: Database, rules: Rules, clock: Clock) -> None:
        self.db = db
        self.rules = rules.push
        self.bounds = rules.bounds
        self.market = rules.calendar.market
        self.clock = clock

    def _unit(self, unit: type[U], session: AsyncSession, now: datetime | None = None) -> U:
        """The unit of work of the aggregate a call reads or changes, in ``session``'s transaction."""
        return unit(session, self.rules, now or self.clock.now(), self.market)

    # -- submission ----------------------------------------------------------------------------

    async def CreateDraft(
        self, request: push_pb2.CreateDraftRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.CreateDraftResponse:
        f = Fields()
        request_id = f.identifier("request_id", request.request_id, required=False)
        store_id = f.identifier("store_id", request.store_id)
        account_id = f.identifier("account_id", request.account_id)
        f.enum("kind", request.kind, push_pb2.PushKind)
        kind = KINDS.get(request.kind)
        title = f.text("title", request.title, max_chars=MAX_NAME_CHARS)
        body = f.text("body", request.body, max_chars=MAX_BODY_CHARS, required=True)
        if kind is not None:
            misuse = grant_misuse(kind, request.grant_id)
            if misuse:
                f.fail("grant_id", misuse)
            else:  # naming no grant is the kind's rule refusing (P5, FAILED_PRECONDITION), not malformed input
                f.identifier("grant_id", request.grant_id, required=False)
        facts = parse_facts(f, request.facts, request.HasField("facts"))
        f.done()
        assert kind is not None
        new = NewDraft(store_id, account_id, kind, title, body, request.grant_id, request_id, facts)
        now = self.clock.now()

        async def create() -> DraftResult:
            async with self.db.transaction() as session:
                return await self._unit(Drafts, session, now).create_draft(new)

        try:
            result = await retry_lost_race(create, what="submission")
        except RuleRefusal as refusal:
            metrics.refused(refusal.failures)
            raise
        await self._observe(store_id, facts, now)
        return push_pb2.CreateDraftResponse(
            push=push_to_proto(result.push), replayed=result.replayed, audience_limit=result.push.audience_limit
        )

    async def AppendAudience(
        self, request: push_pb2.AppendAudienceRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.AppendAudienceResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("push_id", request.push_id)
        ids = list(request.recipient_ids)
        if not ids:
            f.fail("recipient_ids", "at least one recipient is required")
        elif len(ids) > MAX_APPEND_IDS:
            f.fail("recipient_ids", f"at most {MAX_APPEND_IDS} per call, got {len(ids)}")
        else:
            bad = next((i for i, r in enumerate(ids) if not ID_PATTERN.match(r)), None)
            if bad is not None:
                f.identifier(f"recipient_ids[{bad}]", ids[bad])
        f.done()
        async with self.db.transaction() as session:
            size = await self._unit(Drafts, session).append_audience(request.store_id, request.push_id, ids)
        return push_pb2.AppendAudienceResponse(audience_size=size)

    async def SubmitDraft(
        self, request: push_pb2.SubmitDraftRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.SubmitDraftResponse:
        require_ids(request, "store_id", "push_id")
        try:
            async with self.db.transaction() as session:
                row = await self._unit(Drafts, session).submit_draft(request.store_id, request.push_id)
        except RuleRefusal as refusal:
            metrics.refused(refusal.failures)
            raise
        except IntegrityError:
            # The schema's last guard (one recall slot per store, year and tier) refused a concurrent spend.
            raise Aborted("a concurrent submission spent this quota; read the quota ledger") from None
        metrics.pushes.labels(row.kind, PushState.PENDING_REVIEW.value).inc()
        log.info(
            "push submitted",
            extra={"fields": {"push_id": row.push_id, "store_id": row.store_id, "kind": row.kind}},
        )
        return push_pb2.SubmitDraftResponse(push=push_to_proto(row))

    async def DiscardDraft(
        self, request: push_pb2.DiscardDraftRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.DiscardDraftResponse:
        require_ids(request, "store_id", "push_id")
        async with self.db.transaction() as session:
            await self._unit(Drafts, session).discard_draft(request.store_id, request.push_id)
        return push_pb2.DiscardDraftResponse()

    # -- review, cancellation -----------------------------------------------------------------

    async def CancelPush(
        self, request: push_pb2.CancelPushRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.CancelPushResponse:
        require_ids(request, "push_id", "store_id", "account_id")
        async with self.db.transaction() as session:
            change = await self._unit(Reviews, session).cancel(request.push_id, request.store_id)
        metrics.pushes.labels(change.push.kind, PushState.CANCELLED.value).inc()
        if change.quota_returned:
            metrics.quota_returns.labels(change.push.kind, "cancel").inc()
        return push_pb2.CancelPushResponse(push=push_to_proto(change.push))

    async def ReviewPush(
        self, request: push_pb2.ReviewPushRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.ReviewPushResponse:
        f = Fields()
        f.identifier("push_id", request.push_id)
        f.enum("decision", request.decision, push_pb2.ReviewDecision)
        f.identifier("reviewer_id", request.reviewer_id)
        f.text("note", request.note)
        f.done()
        approve = request.decision == push_pb2.REVIEW_DECISION_APPROVE
        async with self.db.transaction() as session:
            change = await self._unit(Reviews, session).review(
                request.push_id, approve, request.reviewer_id, request.note
            )
        metrics.pushes.labels(change.push.kind, change.push.state).inc()
        if change.quota_returned:
            metrics.quota_returns.labels(change.push.kind, "reject").inc()
        log.info(
            "push reviewed",
            extra={
                "fields": {"push_id": change.push.push_id, "state": change.push.state, "reviewer": request.reviewer_id}
            },
        )
        return push_pb2.ReviewPushResponse(push=push_to_proto(change.push))

    async def ListPendingReviews(
        self, request: push_pb2.ListPendingReviewsRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.ListPendingReviewsResponse:
        """P8: ops' queue across stores, oldest submission first, each with the end of its review window."""
        f = Fields()
        limit = f.page_size("page_size", request.page_size)
        store_id = f.identifier("store_id", request.store_id, required=False)
        if request.kind:
            f.enum("kind", request.kind, push_pb2.PushKind)
        f.done()
        kind = KINDS.get(request.kind)
        after = decode_keyset(request.page_token, str(request.kind), store_id)
        now = self.clock.now()
        async with self.db.transaction() as session:
            rows, last = await self._unit(Reviews, session, now).pending_reviews(kind, store_id, after, limit)
        reply = push_pb2.ListPendingReviewsResponse(
            next_page_token=encode_keyset(last, str(request.kind), store_id), as_of=to_timestamp(now)
        )
        for row in rows:
            assert row.submitted_at is not None
            reply.reviews.add(
                push=push_to_proto(row),
                window_ends_at=to_timestamp(domain.review_window_end(row.submitted_at, self.rules)),
            )
        return reply

    # -- reads ---------------------------------------------------------------------------------

    async def GetPush(
        self, request: push_pb2.GetPushRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.GetPushResponse:
        require_ids(request, "push_id")
        async with self.db.transaction() as session:
            row = await self._unit(PushUnit, session).submitted(request.push_id)
        return push_pb2.GetPushResponse(push=push_to_proto(row))

    async def ListPushes(
        self, request: push_pb2.ListPushesRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.ListPushesResponse:
        limit = require_page(request, "store_id")
        before = decode_keyset(request.page_token)
        async with self.db.transaction() as session:
            rows, after = await self._unit(Reviews, session).list_pushes(request.store_id, before, limit)
        return push_pb2.ListPushesResponse(
            pushes=[push_to_proto(r) for r in rows], next_page_token=encode_keyset(after)
        )

    async def GetQuotaLedger(
        self, request: push_pb2.GetQuotaLedgerRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.GetQuotaLedgerResponse:
        f = Fields()
        store_id = f.identifier("store_id", request.store_id)
        facts = parse_facts(f, request.facts, request.HasField("facts"))
        f.done()
        now = self.clock.now()
        async with self.db.transaction() as session:
            quota = await self._unit(PushUnit, session, now).quota_state(store_id)
        await self._observe(store_id, facts, now)
        entries = [
            message_from(
                push_pb2.QuotaEntry,
                entry,
                kind=KIND_PROTOS[entry.kind],
                unmet=[failure.to_proto() for failure in entry.unmet],
            )
            for entry in domain.ledger(facts, quota, now, self.rules, self.market)
        ]
        return push_pb2.GetQuotaLedgerResponse(
            store_id=store_id, as_of=to_timestamp(now), facts=facts_to_proto(facts), entries=entries
        )

    async def ObserveAccount(
        self, request: push_pb2.ObserveAccountRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.ObserveAccountResponse:
        f = Fields()
        store_id = f.identifier("store_id", request.store_id)
        facts = parse_facts(f, request.facts, request.HasField("facts"))
        f.done()
        recorded = await self._observe(store_id, facts, self.clock.now())
        return push_pb2.ObserveAccountResponse(recorded=[notice_to_proto(n) for n in recorded])

    async def _observe(self, store_id: str, facts: AccountFacts, now: datetime) -> list[NoticeRow]:
        """P4: a notice for each recall tier newly earned; the unique key makes it once."""
        async with self.db.transaction() as session:
            recorded = await self._unit(Quotas, session, now).observe(store_id, facts)
        for notice in recorded:
            metrics.notices.labels(notice.kind).inc()
            log.info("recall chance earned", extra={"fields": {"store_id": store_id, "kind": notice.kind}})
        return recorded

    async def ListNotices(
        self, request: push_pb2.ListNoticesRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.ListNoticesResponse:
        limit = require_page(request, "store_id")
        before = decode_keyset(request.page_token)
        async with self.db.transaction() as session:
            rows, after = await self._unit(Quotas, session).list_notices(request.store_id, before, limit)
        return push_pb2.ListNoticesResponse(
            notices=[notice_to_proto(n) for n in rows], next_page_token=encode_keyset(after)
        )

    # -- grants (P5) -------------------------------------------------------------------------

    async def GrantMassSend(
        self, request: push_pb2.GrantMassSendRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.GrantMassSendResponse:
        f = Fields()
        request_id = f.identifier("request_id", request.request_id, required=False)
        f.identifier("store_id", request.store_id)
        f.positive("audience_size", request.audience_size, high=self.bounds.audience)
        f.text("activity", request.activity, max_chars=MAX_NAME_CHARS, required=True)
        f.identifier("granted_by", request.granted_by)
        f.done()

        async def grant() -> tuple[GrantRow, bool]:
            async with self.db.transaction() as session:
                return await self._unit(Quotas, session).grant_mass_send(
                    request.store_id, request.audience_size, request.activity, request.granted_by, request_id
                )

        row, _ = await retry_lost_race(grant, what="grant")
        return push_pb2.GrantMassSendResponse(grant=grant_to_proto(row))

    # -- the delivery ledger (P7) -------------------------------------------------------------

    async def StreamDeliveries(
        self, request: push_pb2.StreamDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[push_pb2.StreamDeliveriesResponse]:
        f = Fields()
        chunk = request.chunk_size or min(DELIVERY_CHUNK, self.bounds.delivery_chunk)
        f.in_range("chunk_size", chunk, 1, self.bounds.delivery_chunk)
        seq, after = parse_cursor(f, request.cursor)
        f.done()
        partial = bool(after)  # the cursor stopped inside batch ``seq``
        pushes: dict[str, PushRow] = {}
        while True:
            async with self.db.transaction() as session:
                repository = self._unit(Deliveries, session)
                if partial:
                    one = await repository.ledger_batch(seq)
                    found = [one] if one is not None else []
                else:
                    found = await repository.ledger_batches(seq, LEDGER_PAGE)
            if not found:
                if partial:
                    partial, after = False, ""
                    continue
                if not request.follow:
                    return
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                continue
            for batch in found:
                start = after if partial else ""
                while True:
                    async with self.db.transaction() as session:
                        repository = self._unit(Deliveries, session)
                        ids = await repository.batch_recipients(batch, start, chunk)
                        push = pushes.get(batch.push_id)
                        if push is None and ids:
                            push = await repository.push(batch.store_id, batch.push_id)
                            if len(pushes) > 256:
                                pushes.clear()
                            pushes[batch.push_id] = push  # type: ignore[assignment]  # found just above: not None here
                    if not ids:
                        break
                    assert push is not None
                    yield message_from(
                        push_pb2.StreamDeliveriesResponse,
                        batch,
                        kind=KIND_PROTOS[PushKind(push.kind)],
                        title=push.title,
                        body=push.body,
                        recipient_ids=ids,
                        cursor=f"{batch.ledger_seq}/{ids[-1]}",
                    )
                    start = ids[-1]
                    if len(ids) < chunk:
                        break
                seq, after, partial = batch.ledger_seq, "", False
