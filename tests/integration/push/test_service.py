"""The push service over a real loopback socket, on SQLite and PostgreSQL (SPEC P1, P2, P5–P7).

The dispatcher is driven by the test here (``Dispatcher.drain`` on a moved
``ManualClock``), so every step is deterministic; the flow tests and the
two-replica test run it as the background task it is in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from prometheus_client import REGISTRY

from qun.push.v1 import push_pb2 as p
from qun.push.v1 import push_pb2_grpc
from services.common.clock import ManualClock
from services.common.db import Database
from services.common.errors import failures_from_status, field_violations, status_from_error
from services.common.rules import Rules
from services.common.settings import async_url
from services.push.app import PushApp
from services.push.dispatcher import DRAFT_TTL, Dispatcher
from tests.support.inprocess import serve

NOW = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
FACTS = p.AccountFacts(subscribers=50, old_customer_fans=2000, recent_broadcasts=7, revisit_rate_bp=600)
Stub = push_pb2_grpc.PushServiceStub


class Service:
    def __init__(self, stub: Stub, dispatcher: Dispatcher, clock: ManualClock) -> None:
        self.stub = stub
        self.dispatcher = dispatcher
        self.clock = clock

    async def draft(
        self, kind: int = p.PUSH_KIND_RECALL_TIER_1, store: str = "s1", **extra: object
    ) -> p.CreateDraftResponse:
        request = p.CreateDraftRequest(store_id=store, account_id="m1", kind=kind, body="hello", facts=FACTS)
        for name, value in extra.items():
            setattr(request, name, value)
        return await self.stub.CreateDraft(request)

    async def submitted(self, kind: int = p.PUSH_KIND_RECALL_TIER_1, recipients: int = 5, **extra: object) -> p.Push:
        draft = await self.draft(kind, **extra)
        ids = [f"c{i:03d}" for i in range(recipients)]
        await self.stub.AppendAudience(
            p.AppendAudienceRequest(store_id="s1", push_id=draft.push.push_id, recipient_ids=ids)
        )
        return (await self.stub.SubmitDraft(p.SubmitDraftRequest(store_id="s1", push_id=draft.push.push_id))).push

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
        try:
            yield Service(Stub(channel), Dispatcher(db, rules.push, rules.calendar.market, clock, batch_size=3), clock)
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
    assert await service.dispatcher.run_once() is None  # not due: nothing written
    assert (await service.get(push.push_id)).state == p.PUSH_STATE_APPROVED
    service.clock.set(NOW + timedelta(hours=24))
    written_before = sample("qun_push_deliveries_written_total")
    first = await service.dispatcher.run_once()
    assert first is not None and (first.written, first.finished) == (3, False)
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

    # A request_id answers its first push again, without a new draft.
    first = await service.submitted(p.PUSH_KIND_SUBSCRIPTION, request_id="r-1")
    again = await service.draft(p.PUSH_KIND_SUBSCRIPTION, request_id="r-1")
    assert again.replayed and again.push.push_id == first.push_id


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


async def test_abandoned_drafts_are_purged(service: Service) -> None:
    draft = await service.draft()
    await service.stub.AppendAudience(
        p.AppendAudienceRequest(store_id="s1", push_id=draft.push.push_id, recipient_ids=["c1"])
    )
    assert await service.dispatcher.purge() == 0
    service.clock.advance(DRAFT_TTL + timedelta(seconds=1))
    assert await service.dispatcher.purge() == 1
    error = await rpc_error(service.stub.SubmitDraft(p.SubmitDraftRequest(store_id="s1", push_id=draft.push.push_id)))
    assert error.code() is grpc.StatusCode.NOT_FOUND
