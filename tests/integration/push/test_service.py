"""The push service over a real loopback socket, on SQLite and PostgreSQL (SPEC P1, P2, P5–P8, D2, D3).

The dispatcher is driven by the test here (``Dispatcher.drain`` on a moved
``ManualClock``), so every step is deterministic; the flow tests and the
two-replica test run it as the background task it is in production.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import exc, text

from qun.push.v1 import push_pb2 as p
from qun.push.v1 import push_pb2_grpc
from services.common.clock import ManualClock
from services.common.db import Database
from services.common.errors import (
    Unavailable,
    error_info,
    failures_from_status,
    field_violations,
    status_from_error,
)
from services.common.loops import Loops
from services.common.rules import Rules
from services.common.settings import async_url
from services.push.app import PushApp
from services.push.deliveries import Deliveries
from services.push.dispatcher import DRAFT_TTL, Dispatcher
from services.push.drafts import Drafts
from tests.support.inprocess import serve
from tests.support.request_ids import refused_as_reused

NOW = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
FACTS = p.AccountFacts(subscribers=50, old_customer_fans=2000, recent_broadcasts=7, revisit_rate_bp=600)
Stub = push_pb2_grpc.PushServiceStub


class Ticks:
    """A monotonic clock the test moves: the dispatcher's backoff reads it (SPEC D3)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Service:
    def __init__(self, stub: Stub, dispatcher: Dispatcher, clock: ManualClock, ticks: Ticks | None = None) -> None:
        self.stub = stub
        self.dispatcher = dispatcher
        self.clock = clock
        self.ticks = ticks or Ticks()

    async def draft(
        self, kind: int = p.PUSH_KIND_RECALL_TIER_1, store: str = "s1", **extra: object
    ) -> p.CreateDraftResponse:
        request = p.CreateDraftRequest(store_id=store, account_id="m1", kind=kind, body="hello", facts=FACTS)
        for name, value in extra.items():
            setattr(request, name, value)
        return await self.stub.CreateDraft(request)

    async def submitted(
        self, kind: int = p.PUSH_KIND_RECALL_TIER_1, recipients: int = 5, store: str = "s1", **extra: object
    ) -> p.Push:
        draft = await self.draft(kind, store, **extra)
        ids = [f"c{i:03d}" for i in range(recipients)]
        await self.stub.AppendAudience(
            p.AppendAudienceRequest(store_id=store, push_id=draft.push.push_id, recipient_ids=ids)
        )
        return (await self.stub.SubmitDraft(p.SubmitDraftRequest(store_id=store, push_id=draft.push.push_id))).push

    async def review(self, push_id: str, decision: int = p.REVIEW_DECISION_APPROVE) -> p.Push:
        return (
            await self.stub.ReviewPush(p.ReviewPushRequest(push_id=push_id, decision=decision, reviewer_id="ops"))
        ).push

    async def get(self, push_id: str) -> p.Push:
        return (await self.stub.GetPush(p.GetPushRequest(push_id=push_id))).push


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def service(
    db_url: str, rules: Rules, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Service]:
    monkeypatch.setenv("QUN_PUSH_DISPATCHER", "off")
    async with serve(PushApp, db_url, rules=rules, clock=clock) as channel:
        db = Database(async_url(db_url), pool_size=2)
        ticks = Ticks()
        dispatcher = Dispatcher(db, rules.push, rules.calendar.market, clock, batch_size=3, monotonic=ticks)
        try:
            yield Service(Stub(channel), dispatcher, clock, ticks)
        finally:
            await db.close()


def reasons(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    return [(x.rule_id, x.reason) for x in failures_from_status(status_from_error(error))]


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_P6_P7_schedule_then_dispatch_in_batches_exactly_once(service: Service) -> None:
    push = await service.submitted(recipients=8)
    assert push.state == p.PUSH_STATE_PENDING_REVIEW and push.audience_size == 8
    service.clock.advance(timedelta(hours=2))
    approved = await service.review(push.push_id)
    assert approved.send_at.ToDatetime(tzinfo=UTC) == NOW + timedelta(hours=24)

    service.clock.set(NOW + timedelta(hours=24) - timedelta(seconds=1))
    assert (await service.dispatcher.run_once()).batches == []  # not due: nothing written
    assert (await service.get(push.push_id)).state == p.PUSH_STATE_APPROVED
    service.clock.set(NOW + timedelta(hours=24))
    written_before = sample("qun_push_deliveries_written_total")
    [first] = (await service.dispatcher.run_once()).batches
    assert (first.written, first.finished) == (3, False)
    assert (await service.get(push.push_id)).state == p.PUSH_STATE_SENDING
    assert await service.dispatcher.drain() == 5
    sent = await service.get(push.push_id)
    assert (sent.state, sent.delivered_count) == (p.PUSH_STATE_SENT, 8)
    assert sample("qun_push_deliveries_written_total") - written_before == 8
    assert await service.dispatcher.drain() == 0  # nothing is written twice

    messages = [m async for m in service.stub.StreamDeliveries(p.StreamDeliveriesRequest(chunk_size=2))]
    ids = [r for m in messages for r in m.recipient_ids]
    assert ids == [f"c{i:03d}" for i in range(8)]
    assert all(m.push_id == push.push_id and m.body == "hello" for m in messages)
    resumed = [m async for m in service.stub.StreamDeliveries(p.StreamDeliveriesRequest(cursor=messages[1].cursor))]
    read = len(messages[0].recipient_ids) + len(messages[1].recipient_ids)
    assert [r for m in resumed for r in m.recipient_ids] == ids[read:]
    assert [m async for m in service.stub.StreamDeliveries(p.StreamDeliveriesRequest(cursor=messages[-1].cursor))] == []


async def test_P1_P2_P5_drafts_check_every_rule_and_seal_the_quota(service: Service) -> None:
    weak = p.AccountFacts(subscribers=3, old_customer_fans=10, recent_broadcasts=1)
    error = await rpc_error(
        service.stub.CreateDraft(
            p.CreateDraftRequest(store_id="s1", account_id="m1", kind=p.PUSH_KIND_RECALL_TIER_1, body="x", facts=weak)
        )
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reasons(error) == [("P2", "NOT_ENOUGH_OLD_CUSTOMER_FANS"), ("P2", "NOT_ENOUGH_BROADCASTS")]
    assert sample("qun_push_quota_refusals_total", rule="P2", reason="NOT_ENOUGH_BROADCASTS") >= 1

    # A draft with nobody in it spends nothing.
    empty = await service.draft()
    error = await rpc_error(service.stub.SubmitDraft(p.SubmitDraftRequest(store_id="s1", push_id=empty.push.push_id)))
    assert reasons(error) == [("P2", "AUDIENCE_EMPTY")]

    # Two drafts of one tier: the first seal spends the quota, the second is refused.
    a, b = await service.draft(), await service.draft()
    assert a.audience_limit == 30_000
    for draft in (a, b):
        await service.stub.AppendAudience(
            p.AppendAudienceRequest(store_id="s1", push_id=draft.push.push_id, recipient_ids=["c1", "c1", "c2"])
        )
    sealed = await service.stub.SubmitDraft(p.SubmitDraftRequest(store_id="s1", push_id=a.push.push_id))
    assert sealed.push.audience_size == 2  # a recipient is in the snapshot once
    error = await rpc_error(service.stub.SubmitDraft(p.SubmitDraftRequest(store_id="s1", push_id=b.push.push_id)))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reasons(error) == [("P2", "RECALL_TIER_USED")]
    await service.stub.DiscardDraft(p.DiscardDraftRequest(store_id="s1", push_id=b.push.push_id))
    gone = await rpc_error(
        service.stub.AppendAudience(
            p.AppendAudienceRequest(store_id="s1", push_id=b.push.push_id, recipient_ids=["c9"])
        )
    )
    assert gone.code() is grpc.StatusCode.NOT_FOUND
    sealed_again = await rpc_error(
        service.stub.AppendAudience(
            p.AppendAudienceRequest(store_id="s1", push_id=a.push.push_id, recipient_ids=["c9"])
        )
    )
    assert sealed_again.code() is grpc.StatusCode.NOT_FOUND  # the snapshot is closed at submission

    # P5: a grant names the audience size; more is refused.
    grant = (
        await service.stub.GrantMassSend(
            p.GrantMassSendRequest(store_id="s1", audience_size=2, activity="official", granted_by="ops")
        )
    ).grant
    mass = await service.draft(p.PUSH_KIND_MASS_SEND, grant_id=grant.grant_id)
    assert mass.audience_limit == 2
    over = await rpc_error(
        service.stub.AppendAudience(
            p.AppendAudienceRequest(store_id="s1", push_id=mass.push.push_id, recipient_ids=["a", "b", "c"])
        )
    )
    assert over.code() is grpc.StatusCode.INVALID_ARGUMENT

    # A request_id answers its first push again, without a new draft; another push with it is refused.
    first = await service.submitted(p.PUSH_KIND_SUBSCRIPTION, request_id="r-1")
    again = await service.draft(p.PUSH_KIND_SUBSCRIPTION, request_id="r-1")
    assert again.replayed and again.push.push_id == first.push_id
    await refused_as_reused(service.draft(p.PUSH_KIND_RECALL_TIER_2, request_id="r-1"), "r-1")
    await refused_as_reused(service.draft(p.PUSH_KIND_SUBSCRIPTION, request_id="r-1", body="another"), "r-1")


async def test_a_grants_request_id_replays_the_grant_or_is_refused_for_another(service: Service) -> None:
    def grant(size: int) -> Awaitable[p.GrantMassSendResponse]:
        return service.stub.GrantMassSend(
            p.GrantMassSendRequest(
                request_id="g-1", store_id="s1", audience_size=size, activity="official", granted_by="ops"
            )
        )

    first = (await grant(2)).grant
    assert (await grant(2)).grant == first
    await refused_as_reused(grant(3), "g-1")


async def test_P6_rejection_returns_the_quota_unless_the_rules_file_says_not(
    service: Service, rules: Rules, db_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    push = await service.submitted(p.PUSH_KIND_SUBSCRIPTION)
    rejected = await service.review(push.push_id, p.REVIEW_DECISION_REJECT)
    assert rejected.quota_returned
    assert (await service.submitted(p.PUSH_KIND_SUBSCRIPTION)).state == p.PUSH_STATE_PENDING_REVIEW
    twice = await rpc_error(service.review(push.push_id))
    assert reasons(twice) == [("P6", "PUSH_ALREADY_REVIEWED")]
    assert (await service.get(push.push_id)).state == p.PUSH_STATE_REJECTED

    strict = replace(rules, push=replace(rules.push, return_quota_on_reject=False))
    async with serve(PushApp, db_url, rules=strict, clock=clock) as channel:
        other = Service(Stub(channel), service.dispatcher, clock)
        tier = await other.submitted(p.PUSH_KIND_RECALL_TIER_2)
        kept = await other.review(tier.push_id, p.REVIEW_DECISION_REJECT)
        assert not kept.quota_returned
        error = await rpc_error(other.draft(p.PUSH_KIND_RECALL_TIER_2))
        assert reasons(error) == [("P2", "RECALL_TIER_USED")]


async def test_bad_input_names_every_field(service: Service) -> None:
    error = await rpc_error(
        service.stub.CreateDraft(
            p.CreateDraftRequest(
                store_id="bad id", account_id="", kind=p.PUSH_KIND_SUBSCRIPTION, body="", grant_id="g1"
            )
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in field_violations(status_from_error(error))} == {
        "store_id",
        "account_id",
        "body",
        "grant_id",
        "facts",
    }
    error = await rpc_error(
        service.stub.ReviewPush(
            p.ReviewPushRequest(push_id="ps_unknown", decision=p.REVIEW_DECISION_APPROVE, reviewer_id="ops")
        )
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    error = await rpc_error(
        service.stub.GrantMassSend(
            p.GrantMassSendRequest(store_id="s1", audience_size=0, activity="", granted_by="ops")
        )
    )
    assert {v.field for v in field_violations(status_from_error(error))} == {"audience_size", "activity"}
    error = await rpc_error(service.stub.ListPushes(p.ListPushesRequest(store_id="s1", page_token="nope")))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    # A forged token whose time is before year 1 in UTC is refused, not an overflow (INTERNAL).
    early = "0001-01-01T00:00:00+05:00|ps_1"
    for call in (
        service.stub.ListPushes(p.ListPushesRequest(store_id="s1", page_token=token(early))),
        service.stub.ListPendingReviews(p.ListPendingReviewsRequest(page_token=token(f"{early}|0|"))),
        service.stub.ListPendingReviews(p.ListPendingReviewsRequest(page_token=token("2026-01-01T00:00:00|ps_1|0|"))),
    ):
        assert (await rpc_error(call)).code() is grpc.StatusCode.INVALID_ARGUMENT


def token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


async def test_abandoned_drafts_are_purged(service: Service) -> None:
    draft = await service.draft()
    await service.stub.AppendAudience(
        p.AppendAudienceRequest(store_id="s1", push_id=draft.push.push_id, recipient_ids=["c1"])
    )
    assert (await service.dispatcher.purge()).settled == {}
    service.clock.advance(DRAFT_TTL + timedelta(seconds=1))
    assert (await service.dispatcher.purge()).settled == {"s1": 1}
    error = await rpc_error(service.stub.SubmitDraft(p.SubmitDraftRequest(store_id="s1", push_id=draft.push.push_id)))
    assert error.code() is grpc.StatusCode.NOT_FOUND


async def test_P5_a_mass_send_naming_no_grant_is_refused_citing_P5(service: Service) -> None:
    """P5, X1: the request is well formed; the account lacks the grant P5 requires (FAILED_PRECONDITION)."""
    error = await rpc_error(service.draft(p.PUSH_KIND_MASS_SEND))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reasons(error) == [("P5", "NO_MASS_SEND_GRANT")]
    info = error_info(status_from_error(error))
    assert info is not None and info.metadata["rules"] == "P5" and info.metadata["P5.grant_id"] == ""
    # A grant on a push of another kind is still a malformed request.
    other = await rpc_error(service.draft(p.PUSH_KIND_SUBSCRIPTION, grant_id="gr_1"))
    assert other.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_P2_a_refusal_names_each_rule_once_and_keeps_every_figure(service: Service) -> None:
    """X1: two P2 failures are "P2" in ErrorInfo's rules (never "P2,P2"), their figures under P2 and P2#2."""
    weak = p.AccountFacts(subscribers=0, old_customer_fans=3, recent_broadcasts=1)
    error = await rpc_error(
        service.stub.CreateDraft(
            p.CreateDraftRequest(store_id="s1", account_id="m1", kind=p.PUSH_KIND_RECALL_TIER_1, body="x", facts=weak)
        )
    )
    info = error_info(status_from_error(error))
    assert info is not None and info.metadata["rules"] == "P2"
    assert info.metadata["P2.old_customer_fans"] == "3" and info.metadata["P2#2.recent_broadcasts"] == "1"


async def test_D2_delivery_chunks_are_bounded_by_the_rules_file(
    service: Service, rules: Rules, db_url: str, clock: ManualClock
) -> None:
    """D2: StreamDeliveries' chunk_size is bounded by bounds.delivery_chunk, not by a constant of the service."""
    error = await rpc_error(
        _first(service.stub.StreamDeliveries(p.StreamDeliveriesRequest(chunk_size=rules.bounds.delivery_chunk + 1)))
    )
    assert [v.field for v in field_violations(status_from_error(error))] == ["chunk_size"]
    small = replace(rules, bounds=replace(rules.bounds, delivery_chunk=5))
    async with serve(PushApp, db_url, rules=small, clock=clock) as channel:
        stub = Stub(channel)
        error = await rpc_error(_first(stub.StreamDeliveries(p.StreamDeliveriesRequest(chunk_size=6))))
        assert "between 1 and 5" in (error.details() or "")
        assert await _first(stub.StreamDeliveries(p.StreamDeliveriesRequest())) is None  # the default fits the bound


async def _first(stream: AsyncIterator[p.StreamDeliveriesResponse]) -> p.StreamDeliveriesResponse | None:
    async for message in stream:
        return message
    return None


# --- D3: one store's data never stops or delays another's deliveries --------------------------------------


async def poison(service: Service, push_id: str, kind: str = "recall_tier_9") -> None:
    """Writes a row straight into the database, past every check: a kind this version does not know."""
    async with service.dispatcher.db.transaction() as session:
        await session.execute(text("UPDATE pushes SET kind = :kind WHERE push_id = :id"), {"kind": kind, "id": push_id})


async def test_D3_a_poisoned_store_is_set_aside_and_another_store_is_delivered_on_time(service: Service) -> None:
    # The poisoned push is the older one: a dispatcher taking the oldest due push first would retry it forever.
    poisoned = await service.submitted(p.PUSH_KIND_RECALL_TIER_1, recipients=5, store="s-poisoned")
    service.clock.advance(timedelta(minutes=1))
    healthy = await service.submitted(p.PUSH_KIND_RECALL_TIER_1, recipients=5, store="s-healthy")
    service.clock.advance(timedelta(minutes=1))
    await service.review(poisoned.push_id)
    due = (await service.review(healthy.push_id)).send_at.ToDatetime(tzinfo=UTC)
    await poison(service, poisoned.push_id)
    failures = sample("qun_job_failures_total", task="dispatch")

    service.clock.set(due)
    first = await service.dispatcher.run_once()
    assert [(f.store_id, f.attempts, f.retry_in_seconds) for f in first.report.failed] == [("s-poisoned", 1, 30.0)]
    assert "recall_tier_9" in first.report.failed[0].error
    assert [b.store_id for b in first.batches] == ["s-healthy"]  # in the same pass, not after it
    assert await service.dispatcher.drain() == 2  # the rest of the healthy push; the poisoned store waits
    sent = await service.get(healthy.push_id)
    assert (sent.state, sent.delivered_count, sent.sent_at.ToDatetime(tzinfo=UTC)) == (p.PUSH_STATE_SENT, 5, due)
    assert sample("qun_job_failures_total", task="dispatch") - failures == 1
    assert sample("qun_job_stores_backing_off", task="dispatch") == 1
    assert sample("qun_push_dispatcher_lag_seconds") == 0  # a store set aside is reported as failing, not as lag

    # Retried once its backoff (30 s, then 60 s) is over, not before.
    service.ticks.now += 29
    assert (await service.dispatcher.run_once()).report.failed == []
    service.ticks.now += 1
    again = await service.dispatcher.run_once()
    assert [(f.store_id, f.attempts, f.retry_in_seconds) for f in again.report.failed] == [("s-poisoned", 2, 60.0)]
    assert sample("qun_job_failures_total", task="dispatch") - failures == 2

    # Its data repaired, the store's push goes out after the next backoff, and the store is no longer set aside.
    await poison(service, poisoned.push_id, kind="recall_tier_1")
    service.ticks.now += 60
    assert await service.dispatcher.drain() == 5
    assert (await service.get(poisoned.push_id)).state == p.PUSH_STATE_SENT
    assert service.dispatcher.dispatch_backoff.waiting() == frozenset()
    assert sample("qun_job_stores_backing_off", task="dispatch") == 0


async def test_D3_the_dispatcher_task_keeps_delivering_past_a_poisoned_store(service: Service) -> None:
    """The background loop itself: the failing store is set aside and the loop goes on at once."""
    poisoned = await service.submitted(p.PUSH_KIND_RECALL_TIER_1, store="s-poisoned")
    healthy = await service.submitted(p.PUSH_KIND_RECALL_TIER_1, store="s-healthy")
    for push in (poisoned, healthy):
        await service.review(push.push_id)
    await poison(service, poisoned.push_id)
    service.clock.advance(timedelta(hours=24))
    service.dispatcher.poll_seconds = 0.05
    loops = Loops()  # as the runtime runs it
    loops.start([service.dispatcher.loop()])
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while (await service.get(healthy.push_id)).state != p.PUSH_STATE_SENT:
            assert asyncio.get_running_loop().time() < deadline, "the healthy store's push was not sent"
            await asyncio.sleep(0.05)
    finally:
        await loops.stop(grace_seconds=10)
    assert loops.running == []
    assert (await service.get(poisoned.push_id)).state == p.PUSH_STATE_APPROVED
    assert "s-poisoned" in service.dispatcher.dispatch_backoff.waiting()


async def test_D3_draft_cleanup_goes_on_past_a_failing_store(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean-up settles store by store: one store whose drafts cannot be dropped holds up no other."""
    for store in ("s-a", "s-broken", "s-b"):
        await service.draft(store=store)
    service.clock.advance(DRAFT_TTL + timedelta(seconds=1))
    purge = Drafts.purge_drafts
    failures = sample("qun_job_failures_total", task="draft_cleanup")

    async def failing(self: Drafts, store_id: str, older_than: timedelta, limit: int) -> int:
        if store_id == "s-broken":
            raise RuntimeError("a row this version cannot drop")
        return await purge(self, store_id, older_than, limit)

    monkeypatch.setattr(Drafts, "purge_drafts", failing)
    report = await service.dispatcher.purge()
    assert report.settled == {"s-a": 1, "s-b": 1}
    assert [f.store_id for f in report.failed] == ["s-broken"]
    assert sample("qun_job_failures_total", task="draft_cleanup") - failures == 1
    assert (await service.dispatcher.purge()).settled == {}  # backing off: not tried again at once
    monkeypatch.setattr(Drafts, "purge_drafts", purge)
    service.ticks.now += 30
    assert (await service.dispatcher.purge()).settled == {"s-broken": 1}


async def test_D3_a_database_outage_is_no_stores_fault(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass ends with the outage (the loop retries); no store is blamed or set aside for it."""
    push = await service.submitted(p.PUSH_KIND_RECALL_TIER_1, store="s-outage")
    await service.review(push.push_id)
    service.clock.advance(timedelta(hours=24))

    async def unreachable(self: Deliveries, store_id: str, batch_size: int) -> None:
        refused = ConnectionRefusedError("connection refused")
        raise exc.OperationalError("SELECT 1", {}, refused) from refused  # as SQLAlchemy raises it

    monkeypatch.setattr(Deliveries, "dispatch_batch", unreachable)
    with pytest.raises(Unavailable):
        await service.dispatcher.run_once()
    assert service.dispatcher.dispatch_backoff.waiting() == frozenset()


# --- P8: ops' review queue ---------------------------------------------------------------------------------


async def queue(service: Service, page_size: int = 0, **filters: object) -> list[p.PendingReview]:
    """Every page of the queue, in order."""
    listed: list[p.PendingReview] = []
    token = ""
    while True:
        reply = await service.stub.ListPendingReviews(
            p.ListPendingReviewsRequest(page_size=page_size, page_token=token, **filters)
        )
        listed += reply.reviews
        token = reply.next_page_token
        if not token:
            return listed


async def test_P8_review_queue_oldest_first_across_stores_with_pages_filters_and_window(
    service: Service, rules: Rules
) -> None:
    grant = (
        await service.stub.GrantMassSend(
            p.GrantMassSendRequest(store_id="s3", audience_size=9, activity="official", granted_by="ops")
        )
    ).grant
    a = await service.submitted(p.PUSH_KIND_RECALL_TIER_2, store="s2")
    service.clock.advance(timedelta(minutes=1))
    b = await service.submitted(p.PUSH_KIND_SUBSCRIPTION, store="s1")
    service.clock.advance(timedelta(minutes=1))
    c = await service.submitted(p.PUSH_KIND_MASS_SEND, store="s3", grant_id=grant.grant_id)
    d = await service.submitted(p.PUSH_KIND_SUBSCRIPTION, store="s2")  # the same instant: by push id
    service.clock.advance(timedelta(minutes=1))
    e = await service.submitted(p.PUSH_KIND_RECALL_TIER_1, store="s1")
    expected = [a.push_id, b.push_id, *sorted([c.push_id, d.push_id]), e.push_id]

    service.clock.advance(timedelta(hours=3))
    first = await service.stub.ListPendingReviews(p.ListPendingReviewsRequest(page_size=2))
    assert [r.push.push_id for r in first.reviews] == expected[:2] and first.next_page_token
    assert first.as_of.ToDatetime(tzinfo=UTC) == service.clock.now()
    for review in first.reviews:
        submitted = review.push.submitted_at.ToDatetime(tzinfo=UTC)
        assert review.window_ends_at.ToDatetime(tzinfo=UTC) == submitted + timedelta(
            hours=rules.push.review_delay_hours
        )
    head = first.reviews[0].push
    assert (head.store_id, head.kind, head.body, head.audience_size) == ("s2", p.PUSH_KIND_RECALL_TIER_2, "hello", 5)
    assert head.facts.old_customer_fans == FACTS.old_customer_fans  # the figures at submission

    # Between pages: a review taken from the first page, one not yet listed, and a new submission.
    await service.review(a.push_id)
    await service.review(expected[3], p.REVIEW_DECISION_REJECT)
    late = await service.submitted(p.PUSH_KIND_SUBSCRIPTION, store="s3")
    rest = [r.push.push_id for r in await _pages_from(service, first.next_page_token, 2)]
    assert rest == [expected[2], e.push_id, late.push_id]  # nothing repeated, nothing skipped

    # Filters: by kind, by store, both; a token of one filter is refused with another.
    pending = [b.push_id, expected[2], e.push_id, late.push_id]
    subscriptions = [r.push.push_id for r in await queue(service, 1, kind=p.PUSH_KIND_SUBSCRIPTION)]
    assert subscriptions == [x for x in pending if x in {b.push_id, d.push_id, late.push_id}]
    assert [r.push.push_id for r in await queue(service, 1, store_id="s1")] == [b.push_id, e.push_id]
    both = await queue(service, kind=p.PUSH_KIND_SUBSCRIPTION, store_id="s3")
    assert [r.push.push_id for r in both] == [late.push_id]
    token = (await service.stub.ListPendingReviews(p.ListPendingReviewsRequest(page_size=1))).next_page_token
    mixed = await rpc_error(
        service.stub.ListPendingReviews(p.ListPendingReviewsRequest(page_size=1, page_token=token, store_id="s1"))
    )
    assert [v.field for v in field_violations(status_from_error(mixed))] == ["page_token"]
    bad = await rpc_error(service.stub.ListPendingReviews(p.ListPendingReviewsRequest(kind=99, store_id="bad id")))
    assert {v.field for v in field_violations(status_from_error(bad))} == {"kind", "store_id"}

    # The monitored age (read from the database, as every replica does) and the queue emptied.
    assert await service.dispatcher.observe_queue() == (timedelta(hours=3, minutes=2).total_seconds(), 4)
    assert sample("qun_push_oldest_pending_review_seconds") == timedelta(hours=3, minutes=2).total_seconds()
    assert sample("qun_push_pending_reviews") == 4
    assert sample("qun_push_review_window_seconds") == rules.push.review_delay_hours * 3600
    await service.stub.CancelPush(p.CancelPushRequest(push_id=b.push_id, store_id="s1", account_id="m1"))
    for push_id in (expected[2], e.push_id, late.push_id):
        await service.review(push_id)
    assert await queue(service) == []
    assert await service.dispatcher.observe_queue() == (0.0, 0)


async def _pages_from(service: Service, token: str, page_size: int) -> list[p.PendingReview]:
    listed: list[p.PendingReview] = []
    while token:
        reply = await service.stub.ListPendingReviews(
            p.ListPendingReviewsRequest(page_size=page_size, page_token=token)
        )
        listed += reply.reviews
        token = reply.next_page_token
    return listed


@pytest.mark.parametrize("store", ["", "s1"])
async def test_P8_the_queue_is_served_by_its_partial_index_without_a_sort(service: Service, store: str) -> None:
    """The queue, its pages and its oldest entry read pending rows from ix_pushes_pending(_store), in order."""
    for _ in range(3):
        await service.submitted(p.PUSH_KIND_SUBSCRIPTION)
        service.clock.advance(timedelta(days=11))
    db = service.dispatcher.db
    where = "state = 'pending_review'" + (" AND store_id = 's1'" if store else "")
    query = (
        f"SELECT push_id FROM pushes WHERE {where} AND (submitted_at, push_id) > ('2026-01-01', 'ps_0') "
        "ORDER BY submitted_at, push_id LIMIT 51"
    )
    async with db.transaction() as session:
        if db.is_postgres:
            await session.execute(text("SET LOCAL enable_seqscan = off"))  # a few rows: plan as for many
            plan = "\n".join((await session.execute(text(f"EXPLAIN {query}"))).scalars())
        else:
            plan = "\n".join(row[-1] for row in await session.execute(text(f"EXPLAIN QUERY PLAN {query}")))
    assert ("ix_pushes_pending_store" if store else "ix_pushes_pending") in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
