"""Push quotas through the gateway, every process real (SPEC P1–P8, X1, X3).

Facts reach the platform as an upstream system reports them; time moves with
``platform.set_time`` (every process reads the same clock file), never with
sleeps. Waiting for the dispatcher is a bounded poll of GetPush. Each test
names the SPEC rules it pins down and fails when one of them breaks.
"""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from gateway.auth import Principal, Role
from qun.common.v1 import facts_pb2
from qun.gateway.v1 import push_pb2 as p
from qun.gateway.v1 import push_pb2_grpc
from services.common.errors import error_info, failures_from_status, field_violations, status_from_error
from tests.support import facts
from tests.support.stack import GatewayClient, RunningStack, unique

OPS = Principal("ops-reviewer", Role.OPS)
NOTIFIER = Principal("notifier", Role.UPSTREAM)
DISPATCH_WAIT_SECONDS = 30.0
REPORT_BATCH = 1000


def reasons(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    return [(f.rule_id, f.reason) for f in failures_from_status(status_from_error(error))]


def rules_of(error: grpc.aio.AioRpcError) -> str:
    """ErrorInfo's ``rules``: each failed rule once (X1), e.g. "P2" for two P2 failures, never "P2,P2"."""
    status = status_from_error(error)
    info = error_info(status) if status is not None else None
    assert info is not None
    return info.metadata["rules"]


def figures_of(error: grpc.aio.AioRpcError, reason: str) -> dict[str, str]:
    return next(dict(f.figures) for f in failures_from_status(status_from_error(error)) if f.reason == reason)


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


class Account:
    """A store's content account, and the facts that make its push figures."""

    def __init__(self, gw: GatewayClient, platform: RunningStack) -> None:
        self.gw = gw
        self.platform = platform
        self.store_id, self.main_id = unique("s"), unique("m")
        self.stub = push_pb2_grpc.PushServiceStub(gw.channel)
        self.main = gw.auth(gw.main_account(self.main_id, self.store_id))
        self.ops = gw.auth(OPS)
        self._n = 0

    async def report(self, batch: list[facts_pb2.Fact]) -> None:
        for start in range(0, len(batch), REPORT_BATCH):
            await self.gw.report(batch[start : start + REPORT_BATCH])

    async def open(self) -> Account:
        await self.report(facts.store(self.store_id, self.main_id, self.platform.now, orders=0, level=None))
        return self

    def _ids(self, prefix: str, count: int) -> list[str]:
        first = self._n
        self._n += count
        return [f"{self.store_id}-{prefix}{i}" for i in range(first, first + count)]

    async def subscribers(self, count: int) -> list[str]:
        ids = self._ids("sub", count)
        await self.report(
            [
                facts_pb2.Fact(
                    push_subscription=facts_pb2.PushSubscriptionFact(
                        store_id=self.store_id, consumer_id=c, subscribed=True
                    )
                )
                for c in ids
            ]
        )
        return ids

    def _orders(self, consumer: str, *days_ago: float) -> list[facts_pb2.Fact]:
        now = self.platform.now
        return [
            facts.order(f"{consumer}-o{i}", self.store_id, consumer, 1000, now - timedelta(days=d))
            for i, d in enumerate(days_ago)
        ]

    def _follow(self, consumer: str) -> facts_pb2.Fact:
        return facts_pb2.Fact(follow=facts_pb2.FollowFact(store_id=self.store_id, consumer_id=consumer, following=True))

    async def old_customer_fans(self, count: int, *days_ago: float) -> list[str]:
        """P3: fans who bought on two different days (by default yesterday and three days ago)."""
        ids = self._ids("fan", count)
        batch: list[facts_pb2.Fact] = []
        for c in ids:
            batch += [*self._orders(c, *(days_ago or (1, 3))), self._follow(c)]
        await self.report(batch)
        return ids

    async def old_customers(self, count: int, *days_ago: float) -> list[str]:
        """Old customers (P3) who are not fans: the recall audience (P2)."""
        ids = self._ids("old", count)
        batch: list[facts_pb2.Fact] = []
        for c in ids:
            batch += self._orders(c, *(days_ago or (1, 3)))
        await self.report(batch)
        return ids

    async def broadcasts(self, count: int, age: timedelta = timedelta(hours=1)) -> None:
        published = facts.ts(self.platform.now - age)
        await self.report(
            [
                facts_pb2.Fact(
                    broadcast=facts_pb2.BroadcastFact(store_id=self.store_id, broadcast_id=b, published_at=published)
                )
                for b in self._ids("b", count)
            ]
        )

    async def revisit_rate(self, bp: int) -> None:
        await self.report(
            [
                facts_pb2.Fact(
                    revisit_rate=facts_pb2.RevisitRateFact(
                        store_id=self.store_id, rate_bp=bp, computed_at=facts.ts(self.platform.now)
                    )
                )
            ]
        )

    async def submit(self, kind: int, body: str = "新品上架", **extra: str) -> p.Push:
        reply = await self.stub.SubmitPush(p.SubmitPushRequest(kind=kind, body=body, **extra), metadata=self.main)
        return reply.push

    async def review(self, push_id: str, decision: int) -> p.Push:
        reply = await self.stub.ReviewPush(p.ReviewPushRequest(push_id=push_id, decision=decision), metadata=self.ops)
        return reply.push

    async def get(self, push_id: str) -> p.Push:
        return (await self.stub.GetPush(p.GetPushRequest(push_id=push_id), metadata=self.main)).push

    async def ledger(self) -> dict[int, p.QuotaEntry]:
        reply = await self.stub.GetQuotaLedger(p.GetQuotaLedgerRequest(), metadata=self.main)
        return {entry.kind: entry for entry in reply.entries}

    async def notices(self) -> list[p.PushNotice]:
        return list((await self.stub.ListPushNotices(p.ListPushNoticesRequest(), metadata=self.main)).notices)

    async def wait_sent(self, push_id: str) -> p.Push:
        deadline = asyncio.get_running_loop().time() + DISPATCH_WAIT_SECONDS
        while True:
            push = await self.get(push_id)
            if push.state == p.PUSH_STATE_SENT:
                return push
            assert asyncio.get_running_loop().time() < deadline, f"not sent: {push}"
            await asyncio.sleep(0.1)

    async def delivered(self, push_id: str, *, cursor: str = "", chunk_size: int = 0) -> tuple[list[str], list[str]]:
        """The recipients the ledger holds for this push, and the cursors read (as a notifier)."""
        recipients: list[str] = []
        cursors: list[str] = []
        stream = self.stub.StreamDeliveries(
            p.StreamDeliveriesRequest(cursor=cursor, chunk_size=chunk_size), metadata=self.gw.auth(NOTIFIER), timeout=30
        )
        async for message in stream:
            if message.push_id == push_id:
                assert message.store_id == self.store_id
                recipients += message.recipient_ids
                cursors.append(message.cursor)
        return recipients, cursors


async def account(gw: GatewayClient, platform: RunningStack) -> Account:
    return await Account(gw, platform).open()


async def still_approved(acct: Account, push_id: str) -> None:
    """Gives the dispatcher (polling every 0.5 s) a few turns, then checks nothing went out."""
    await asyncio.sleep(1.5)
    push = await acct.get(push_id)
    assert push.state == p.PUSH_STATE_APPROVED and push.delivered_count == 0


async def test_p1_subscription_push_every_10_days_to_every_subscriber_P1_P6_P7(
    gw: GatewayClient, platform: RunningStack
) -> None:
    acct = await account(gw, platform)
    subscribers = await acct.subscribers(9)

    error = await refused(acct.submit(p.PUSH_KIND_SUBSCRIPTION))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reasons(error) == [("P1", "NOT_ENOUGH_SUBSCRIBERS")]
    assert figures_of(error, "NOT_ENOUGH_SUBSCRIBERS") == {"subscribers": "9", "required": "10"}

    subscribers += await acct.subscribers(1)
    start = platform.now
    push = await acct.submit(p.PUSH_KIND_SUBSCRIPTION, title="上新", body="春季新品")
    assert push.state == p.PUSH_STATE_PENDING_REVIEW
    assert push.audience_size == 10 and push.figures.subscribers == 10
    assert push.submitted_at.ToDatetime(tzinfo=UTC) == start

    again = await refused(acct.submit(p.PUSH_KIND_SUBSCRIPTION))
    assert again.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reasons(again) == [("P1", "SUBSCRIPTION_INTERVAL")]
    entry = (await acct.ledger())[p.PUSH_KIND_SUBSCRIPTION]
    assert (entry.remaining, entry.available_now) == (0, False)
    assert entry.next_possible_at.ToDatetime(tzinfo=UTC) == start + timedelta(days=10)

    # P6: approved an hour later, it is still sent no earlier than 24 hours after submission.
    platform.set_time(start + timedelta(hours=1))
    approved = await acct.review(push.push_id, p.REVIEW_DECISION_APPROVE)
    assert approved.state == p.PUSH_STATE_APPROVED
    assert approved.send_at.ToDatetime(tzinfo=UTC) == start + timedelta(hours=24)
    platform.set_time(start + timedelta(hours=24) - timedelta(seconds=1))
    await still_approved(acct, push.push_id)
    platform.set_time(start + timedelta(hours=24))
    sent = await acct.wait_sent(push.push_id)
    assert sent.delivered_count == 10 and sent.sent_at.ToDatetime(tzinfo=UTC) == start + timedelta(hours=24)

    # P7: every subscriber exactly once in the ledger.
    recipients, _ = await acct.delivered(push.push_id)
    assert sorted(recipients) == sorted(subscribers)

    # P1: one per 10 days, counted from the submission; the end of the interval is allowed.
    platform.set_time(start + timedelta(days=10) - timedelta(seconds=1))
    assert reasons(await refused(acct.submit(p.PUSH_KIND_SUBSCRIPTION))) == [("P1", "SUBSCRIPTION_INTERVAL")]
    platform.set_time(start + timedelta(days=10))
    assert (await acct.ledger())[p.PUSH_KIND_SUBSCRIPTION].available_now
    assert (await acct.submit(p.PUSH_KIND_SUBSCRIPTION)).state == p.PUSH_STATE_PENDING_REVIEW


async def test_p2_p3_recall_tier_1_conditions_audience_and_once_a_year(
    gw: GatewayClient, platform: RunningStack
) -> None:
    acct = await account(gw, platform)
    await acct.old_customer_fans(49)
    # P3: two orders on one day, or one of the two days older than half a year, make no old customer.
    await acct.old_customer_fans(3, 0.01, 0.02)
    await acct.old_customer_fans(3, 1, 200)
    await acct.broadcasts(4)
    await acct.broadcasts(3, age=timedelta(days=8))  # P2: only the last 7 days count
    recall = await acct.old_customers(6)
    await acct.old_customers(2, 5, 5.01)  # one day only: not an old customer, not in the audience

    error = await refused(acct.submit(p.PUSH_KIND_RECALL_TIER_1))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reasons(error) == [("P2", "NOT_ENOUGH_OLD_CUSTOMER_FANS"), ("P2", "NOT_ENOUGH_BROADCASTS")]
    assert rules_of(error) == "P2"  # each rule once, however many of its conditions failed
    assert figures_of(error, "NOT_ENOUGH_OLD_CUSTOMER_FANS")["old_customer_fans"] == "49"
    assert figures_of(error, "NOT_ENOUGH_BROADCASTS")["recent_broadcasts"] == "4"

    await acct.old_customer_fans(1)
    await acct.broadcasts(1)
    push = await acct.submit(p.PUSH_KIND_RECALL_TIER_1)
    assert push.state == p.PUSH_STATE_PENDING_REVIEW
    assert push.figures.old_customer_fans == 50 and push.figures.recent_broadcasts == 5
    assert push.audience_size == len(recall)  # old customers who are not fans, up to 30,000

    error = await refused(acct.submit(p.PUSH_KIND_RECALL_TIER_1))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reasons(error) == [("P2", "RECALL_TIER_USED")]
    entries = await acct.ledger()
    tier1 = entries[p.PUSH_KIND_RECALL_TIER_1]
    year = (platform.now + timedelta(hours=8)).year
    next_year = datetime(year + 1, 1, 1, tzinfo=UTC) - timedelta(hours=8)  # Jan 1 00:00 China Standard Time
    assert (tier1.remaining, tier1.audience_size) == (0, 30000)
    assert tier1.next_possible_at.ToDatetime(tzinfo=UTC) == next_year
    # Tier 2 is its own chance, with its own conditions and figures.
    tier2 = entries[p.PUSH_KIND_RECALL_TIER_2]
    assert tier2.remaining == 1 and not tier2.available_now
    assert [(f.rule_id, f.reason) for f in tier2.unmet] == [
        ("P2", "NOT_ENOUGH_OLD_CUSTOMER_FANS"),
        ("P2", "REVISIT_RATE_TOO_LOW"),
    ]

    # The approved push reaches exactly the snapshotted audience.
    await acct.review(push.push_id, p.REVIEW_DECISION_APPROVE)
    platform.set_time(platform.now + timedelta(hours=24))
    await acct.wait_sent(push.push_id)
    recipients, _ = await acct.delivered(push.push_id)
    assert sorted(recipients) == sorted(recall)

    # P2: a calendar year (China Standard Time): the last second of the year is still spent, the next year is new.
    platform.set_time(next_year - timedelta(seconds=1))
    assert (await acct.ledger())[p.PUSH_KIND_RECALL_TIER_1].remaining == 0
    platform.set_time(next_year)
    assert (await acct.ledger())[p.PUSH_KIND_RECALL_TIER_1].remaining == 1


async def test_p2_recall_tier_2_revisit_rate_and_figures_P2_P4(gw: GatewayClient, platform: RunningStack) -> None:
    acct = await account(gw, platform)
    await acct.old_customer_fans(1000)
    await acct.old_customers(3)
    await acct.revisit_rate(499)
    error = await refused(acct.submit(p.PUSH_KIND_RECALL_TIER_2))
    assert reasons(error) == [("P2", "REVISIT_RATE_TOO_LOW")]
    assert figures_of(error, "REVISIT_RATE_TOO_LOW") == {"tier": "2", "revisit_rate_bp": "499", "required_bp": "500"}
    assert [n.kind for n in await acct.notices()] == []  # tier 1 needs broadcasts; tier 2 the rate

    await acct.revisit_rate(500)
    # P4: meeting tier 2 posted a notice when the fact arrived, once.
    notices = await acct.notices()
    assert [(n.kind, n.year) for n in notices] == [
        (p.PUSH_KIND_RECALL_TIER_2, (platform.now + timedelta(hours=8)).year)
    ]
    push = await acct.submit(p.PUSH_KIND_RECALL_TIER_2)
    assert push.audience_size == 3 and push.figures.revisit_rate_bp == 500
    assert (await acct.ledger())[p.PUSH_KIND_RECALL_TIER_2].audience_size == 100000


async def test_p4_notice_recorded_once_when_a_tier_is_first_met(gw: GatewayClient, platform: RunningStack) -> None:
    acct = await account(gw, platform)
    await acct.old_customer_fans(50)
    assert await acct.notices() == []
    await acct.broadcasts(5)  # tier 1 met by this report
    first = await acct.notices()
    assert [n.kind for n in first] == [p.PUSH_KIND_RECALL_TIER_1]
    assert "tier 1" in first[0].text and first[0].store_id == acct.store_id
    await acct.broadcasts(2)
    await acct.old_customer_fans(5)
    await acct.ledger()
    assert [n.notice_id for n in await acct.notices()] == [first[0].notice_id]
    # Another store's accounts read nothing of it; ops read it by naming the store.
    other = await account(gw, platform)
    denied = await refused(
        acct.stub.ListPushNotices(p.ListPushNoticesRequest(store_id=acct.store_id), metadata=other.main)
    )
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    seen = await acct.stub.ListPushNotices(p.ListPushNoticesRequest(store_id=acct.store_id), metadata=acct.ops)
    assert [n.notice_id for n in seen.notices] == [first[0].notice_id]


async def test_p5_mass_send_only_with_a_grant_one_message_each(gw: GatewayClient, platform: RunningStack) -> None:
    acct = await account(gw, platform)
    fans = await acct.old_customer_fans(5)

    # Naming no grant is P5's refusal, like an unknown grant: the request is well formed, the grant is missing.
    missing = await refused(acct.submit(p.PUSH_KIND_MASS_SEND))
    assert missing.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reasons(missing) == [("P5", "NO_MASS_SEND_GRANT")] and rules_of(missing) == "P5"
    unknown = await refused(acct.submit(p.PUSH_KIND_MASS_SEND, grant_id="gr_nothing"))
    assert unknown.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reasons(unknown) == [("P5", "NO_MASS_SEND_GRANT")]
    assert (await acct.ledger())[p.PUSH_KIND_MASS_SEND].remaining == 0

    grant_request = p.GrantMassSendRequest(store_id=acct.store_id, audience_size=3, activity="双11 official")
    denied = await refused(acct.stub.GrantMassSend(grant_request, metadata=acct.main))
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    grant = (await acct.stub.GrantMassSend(grant_request, metadata=acct.ops)).grant
    entry = (await acct.ledger())[p.PUSH_KIND_MASS_SEND]
    assert (entry.remaining, entry.available_now, entry.audience_size) == (1, True, 3)

    push = await acct.submit(p.PUSH_KIND_MASS_SEND, grant_id=grant.grant_id)
    assert push.grant_id == grant.grant_id and push.audience_size == 3  # the grant's size, from the fans
    used = await refused(acct.submit(p.PUSH_KIND_MASS_SEND, grant_id=grant.grant_id))
    assert used.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reasons(used) == [("P5", "GRANT_ALREADY_USED")]
    await acct.review(push.push_id, p.REVIEW_DECISION_APPROVE)
    platform.set_time(platform.now + timedelta(hours=24))
    await acct.wait_sent(push.push_id)
    recipients, _ = await acct.delivered(push.push_id)
    assert len(recipients) == 3 and set(recipients) <= set(fans)


async def test_p6_review_roles_rejection_cancel_and_late_approval(gw: GatewayClient, platform: RunningStack) -> None:
    acct = await account(gw, platform)
    await acct.old_customer_fans(50)
    await acct.broadcasts(5)
    await acct.old_customers(2)
    push = await acct.submit(p.PUSH_KIND_RECALL_TIER_1)

    # Only ops review (role rule); an unknown push is NOT_FOUND.
    denied = await refused(
        acct.stub.ReviewPush(
            p.ReviewPushRequest(push_id=push.push_id, decision=p.REVIEW_DECISION_APPROVE), metadata=acct.main
        )
    )
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    unknown = await refused(acct.review("ps_0000000000000000", p.REVIEW_DECISION_APPROVE))
    assert unknown.code() is grpc.StatusCode.NOT_FOUND

    # Rejected: never sent, and the recall quota comes back (rules file switch).
    rejected = await acct.review(push.push_id, p.REVIEW_DECISION_REJECT)
    assert rejected.state == p.PUSH_STATE_REJECTED and rejected.quota_returned
    assert (await acct.ledger())[p.PUSH_KIND_RECALL_TIER_1].available_now
    twice = await refused(acct.review(push.push_id, p.REVIEW_DECISION_APPROVE))
    assert twice.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reasons(twice) == [("P6", "PUSH_ALREADY_REVIEWED")]

    # Cancelled by the merchant before send: the quota comes back too.
    second = await acct.submit(p.PUSH_KIND_RECALL_TIER_1)
    await acct.review(second.push_id, p.REVIEW_DECISION_APPROVE)
    approve_twice = await refused(acct.review(second.push_id, p.REVIEW_DECISION_APPROVE))
    assert reasons(approve_twice) == [("P6", "PUSH_ALREADY_REVIEWED")]
    assert (await acct.get(second.push_id)).state == p.PUSH_STATE_APPROVED  # nothing changed
    cancelled = await acct.stub.CancelPush(p.CancelPushRequest(push_id=second.push_id), metadata=acct.main)
    assert cancelled.push.state == p.PUSH_STATE_CANCELLED and cancelled.push.quota_returned
    assert reasons(
        await refused(acct.stub.CancelPush(p.CancelPushRequest(push_id=second.push_id), metadata=acct.main))
    ) == [("P6", "PUSH_NOT_CANCELLABLE")]

    # Approved more than 24 hours after submission: it goes at approval.
    third = await acct.submit(p.PUSH_KIND_RECALL_TIER_1)
    submitted = third.submitted_at.ToDatetime(tzinfo=UTC)
    platform.set_time(submitted + timedelta(hours=30))
    late = await acct.review(third.push_id, p.REVIEW_DECISION_APPROVE)
    assert late.send_at.ToDatetime(tzinfo=UTC) == submitted + timedelta(hours=30)
    assert (await acct.wait_sent(third.push_id)).delivered_count == 2
    # The rejected and cancelled pushes were never sent.
    for never in (push.push_id, second.push_id):
        assert (await acct.get(never)).delivered_count == 0
    cannot = await refused(acct.stub.CancelPush(p.CancelPushRequest(push_id=third.push_id), metadata=acct.main))
    assert reasons(cannot) == [("P6", "PUSH_NOT_CANCELLABLE")]


async def test_p6_a_former_main_account_cancels_nothing(gw: GatewayClient, platform: RunningStack) -> None:
    """Right role and store, wrong account: the store's main account changed while the old token lives on."""
    acct = await account(gw, platform)
    await acct.old_customer_fans(50)
    await acct.broadcasts(5)
    await acct.old_customers(2)
    pending = await acct.submit(p.PUSH_KIND_RECALL_TIER_1)
    former = acct.main
    successor = unique("m")
    await acct.report(facts.store(acct.store_id, successor, platform.now, orders=0, level=None))
    for call in (
        acct.stub.CancelPush(p.CancelPushRequest(push_id=pending.push_id), metadata=former),
        acct.stub.SubmitPush(p.SubmitPushRequest(kind=p.PUSH_KIND_RECALL_TIER_2, body="x"), metadata=former),
        acct.stub.GetQuotaLedger(p.GetQuotaLedgerRequest(), metadata=former),
    ):
        denied = await refused(call)
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "is not store" in (denied.details() or "")
    acct.main = gw.auth(gw.main_account(successor, acct.store_id))
    kept = await acct.get(pending.push_id)
    assert kept.state == p.PUSH_STATE_PENDING_REVIEW and not kept.quota_returned
    assert not (await acct.ledger())[p.PUSH_KIND_RECALL_TIER_1].available_now  # the quota stays spent
    cancelled = await acct.stub.CancelPush(p.CancelPushRequest(push_id=pending.push_id), metadata=acct.main)
    assert cancelled.push.state == p.PUSH_STATE_CANCELLED and cancelled.push.quota_returned


async def test_p7_delivery_ledger_streams_from_a_cursor(gw: GatewayClient, platform: RunningStack) -> None:
    acct = await account(gw, platform)
    subscribers = await acct.subscribers(12)
    push = await acct.submit(p.PUSH_KIND_SUBSCRIPTION)
    await acct.review(push.push_id, p.REVIEW_DECISION_APPROVE)
    platform.set_time(platform.now + timedelta(hours=24))
    await acct.wait_sent(push.push_id)

    everything, cursors = await acct.delivered(push.push_id, chunk_size=5)
    assert sorted(everything) == sorted(subscribers) and len(everything) == len(set(everything))
    assert len(cursors) >= 3
    # A reader that stopped after the first message resumes with exactly the rest.
    rest, _ = await acct.delivered(push.push_id, cursor=cursors[0], chunk_size=5)
    assert rest == everything[5:]

    consumer = gw.auth(gw.consumer(unique("c")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in acct.stub.StreamDeliveries(p.StreamDeliveriesRequest(), metadata=consumer):
            pass
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    bad = acct.stub.StreamDeliveries(p.StreamDeliveriesRequest(cursor="not a cursor"), metadata=gw.auth(NOTIFIER))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in bad:
            pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_x3_quota_ledger_lists_every_unmet_condition_read_only(gw: GatewayClient, platform: RunningStack) -> None:
    acct = await account(gw, platform)
    await acct.subscribers(3)
    await acct.old_customer_fans(7)
    await acct.broadcasts(2)
    entries = await acct.ledger()
    assert set(entries) == {
        p.PUSH_KIND_SUBSCRIPTION,
        p.PUSH_KIND_RECALL_TIER_1,
        p.PUSH_KIND_RECALL_TIER_2,
        p.PUSH_KIND_MASS_SEND,
    }
    unmet = {kind: {(f.rule_id, f.reason): dict(f.figures) for f in e.unmet} for kind, e in entries.items()}
    assert unmet[p.PUSH_KIND_SUBSCRIPTION] == {("P1", "NOT_ENOUGH_SUBSCRIBERS"): {"subscribers": "3", "required": "10"}}
    assert unmet[p.PUSH_KIND_RECALL_TIER_1][("P2", "NOT_ENOUGH_OLD_CUSTOMER_FANS")]["old_customer_fans"] == "7"
    assert unmet[p.PUSH_KIND_RECALL_TIER_1][("P2", "NOT_ENOUGH_BROADCASTS")]["recent_broadcasts"] == "2"
    assert unmet[p.PUSH_KIND_RECALL_TIER_2][("P2", "REVISIT_RATE_TOO_LOW")]["revisit_rate_bp"] == ""
    assert set(unmet[p.PUSH_KIND_MASS_SEND]) == {("P5", "NO_MASS_SEND_GRANT")}
    assert all(e.remaining == 1 for k, e in entries.items() if k != p.PUSH_KIND_MASS_SEND)
    assert not any(e.available_now for e in entries.values())
    # Read-only: reading it twice changes nothing, and pushes stay empty.
    assert await acct.ledger() == entries
    listed = await acct.stub.ListPushes(p.ListPushesRequest(), metadata=acct.main)
    assert list(listed.pushes) == []
    # Ops name the store; a consumer reads no ledger.
    as_ops = await acct.stub.GetQuotaLedger(p.GetQuotaLedgerRequest(store_id=acct.store_id), metadata=acct.ops)
    assert len(as_ops.entries) == 4 and as_ops.figures.subscribers == 3
    no_store = await refused(acct.stub.GetQuotaLedger(p.GetQuotaLedgerRequest(), metadata=acct.ops))
    assert no_store.code() is grpc.StatusCode.INVALID_ARGUMENT
    consumer = gw.auth(gw.consumer(unique("c")))
    assert (
        await refused(acct.stub.GetQuotaLedger(p.GetQuotaLedgerRequest(store_id=acct.store_id), metadata=consumer))
    ).code() is grpc.StatusCode.PERMISSION_DENIED


async def test_bad_input_and_wrong_roles_change_nothing_P1_P5_P6(gw: GatewayClient, platform: RunningStack) -> None:
    acct = await account(gw, platform)
    await acct.subscribers(10)

    empty = await refused(acct.submit(p.PUSH_KIND_SUBSCRIPTION, body=""))
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(status_from_error(empty))] == ["body"]
    too_long = await refused(acct.submit(p.PUSH_KIND_SUBSCRIPTION, body="长" * 2001))
    assert too_long.code() is grpc.StatusCode.INVALID_ARGUMENT
    huge = await refused(acct.submit(p.PUSH_KIND_SUBSCRIPTION, body="x" * (10 * 1024 * 1024)))
    assert huge.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # over the 4 MB message limit, refused unread
    no_kind = await refused(acct.stub.SubmitPush(p.SubmitPushRequest(body="hi"), metadata=acct.main))
    assert no_kind.code() is grpc.StatusCode.INVALID_ARGUMENT
    sub = gw.auth(Principal(unique("sub"), Role.STORE_SUB, acct.store_id))
    as_sub = await refused(
        acct.stub.SubmitPush(p.SubmitPushRequest(kind=p.PUSH_KIND_SUBSCRIPTION, body="hi"), metadata=sub)
    )
    assert as_sub.code() is grpc.StatusCode.PERMISSION_DENIED
    impostor = gw.auth(gw.main_account(unique("m"), acct.store_id))  # a store_main token, not the store's main account
    wrong_main = await refused(
        acct.stub.SubmitPush(p.SubmitPushRequest(kind=p.PUSH_KIND_SUBSCRIPTION, body="hi"), metadata=impostor)
    )
    assert wrong_main.code() is grpc.StatusCode.PERMISSION_DENIED

    listed = await acct.stub.ListPushes(p.ListPushesRequest(), metadata=acct.main)
    assert list(listed.pushes) == []
    assert (await acct.ledger())[p.PUSH_KIND_SUBSCRIPTION].available_now

    # A repeated request_id returns the first answer and spends nothing twice.
    first = await acct.submit(p.PUSH_KIND_SUBSCRIPTION, request_id="req-1")
    replay = await acct.submit(p.PUSH_KIND_SUBSCRIPTION, request_id="req-1")
    assert replay.push_id == first.push_id
    listed = await acct.stub.ListPushes(p.ListPushesRequest(), metadata=acct.main)
    assert [x.push_id for x in listed.pushes] == [first.push_id]


async def walk(acct: Account, page_size: int, **filters: object) -> list[p.PendingReview]:
    """Ops read the whole review queue, page after page."""
    listed: list[p.PendingReview] = []
    token = ""
    while True:
        reply = await acct.stub.ListPendingReviews(
            p.ListPendingReviewsRequest(page_size=page_size, page_token=token, **filters), metadata=acct.ops
        )
        listed += reply.reviews
        token = reply.next_page_token
        if not token:
            return listed


def when(stamp: object) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined]


async def test_p8_ops_review_queue_oldest_first_across_stores_P6_P8(gw: GatewayClient, platform: RunningStack) -> None:
    first, second = await account(gw, platform), await account(gw, platform)
    for acct in (first, second):
        await acct.subscribers(10)
        await acct.old_customer_fans(50)
        await acct.broadcasts(5)
        await acct.old_customers(2)
    start = platform.now
    a = await first.submit(p.PUSH_KIND_SUBSCRIPTION, title="上新")
    platform.set_time(start + timedelta(minutes=1))
    b = await second.submit(p.PUSH_KIND_RECALL_TIER_1, title="回来看看")
    platform.set_time(start + timedelta(minutes=2))
    c = await first.submit(p.PUSH_KIND_RECALL_TIER_1)
    platform.set_time(start + timedelta(minutes=3))
    d = await second.submit(p.PUSH_KIND_SUBSCRIPTION)
    ours = [a.push_id, b.push_id, c.push_id, d.push_id]

    # One queue across every store, oldest submission first, in pages; each with its window's end.
    platform.set_time(start + timedelta(hours=5))
    listed = await walk(first, 2)
    keys = [(when(r.push.submitted_at), r.push.push_id) for r in listed]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert [r.push.push_id for r in listed if r.push.push_id in ours] == ours
    mine = {r.push.push_id: r for r in listed}
    for review in (mine[x] for x in ours):
        assert review.push.state == p.PUSH_STATE_PENDING_REVIEW
        assert when(review.window_ends_at) == when(review.push.submitted_at) + timedelta(hours=24)
    head = mine[b.push_id].push  # what a reviewer needs
    assert (head.store_id, head.kind, head.title, head.body) == (
        second.store_id,
        p.PUSH_KIND_RECALL_TIER_1,
        "回来看看",
        "新品上架",
    )
    assert head.audience_size == 2 and head.figures.old_customer_fans == 50 and head.figures.recent_broadcasts == 5

    # Filters: a store, a kind, both.
    assert [r.push.push_id for r in await walk(first, 1, store_id=first.store_id)] == [a.push_id, c.push_id]
    recall = [r.push.push_id for r in await walk(first, 50, kind=p.PUSH_KIND_RECALL_TIER_1)]
    assert [x for x in recall if x in ours] == [b.push_id, c.push_id]
    assert [r.push.push_id for r in await walk(first, 0, store_id=second.store_id, kind=p.PUSH_KIND_SUBSCRIPTION)] == [
        d.push_id
    ]

    # Stable under concurrent work: between two pages a push is reviewed and another submitted.
    page = await first.stub.ListPendingReviews(
        p.ListPendingReviewsRequest(page_size=1, store_id=second.store_id), metadata=first.ops
    )
    assert [r.push.push_id for r in page.reviews] == [b.push_id]
    await second.review(b.push_id, p.REVIEW_DECISION_APPROVE)
    grant = (
        await second.stub.GrantMassSend(
            p.GrantMassSendRequest(store_id=second.store_id, audience_size=2, activity="official"), metadata=second.ops
        )
    ).grant
    e = await second.submit(p.PUSH_KIND_MASS_SEND, grant_id=grant.grant_id)
    rest: list[str] = []
    token = page.next_page_token
    while token:
        reply = await first.stub.ListPendingReviews(
            p.ListPendingReviewsRequest(page_size=1, page_token=token, store_id=second.store_id), metadata=first.ops
        )
        rest += [r.push.push_id for r in reply.reviews]
        token = reply.next_page_token
    assert rest == [d.push_id, e.push_id]
    other_filter = await refused(
        first.stub.ListPendingReviews(
            p.ListPendingReviewsRequest(page_token=page.next_page_token, store_id=first.store_id), metadata=first.ops
        )
    )
    assert [v.field for v in field_violations(status_from_error(other_filter))] == ["page_token"]

    # Reviewed (approved or rejected) and cancelled pushes leave the queue.
    await first.review(a.push_id, p.REVIEW_DECISION_REJECT)
    await first.stub.CancelPush(p.CancelPushRequest(push_id=c.push_id), metadata=first.main)
    left = [r.push.push_id for r in await walk(first, 500)]
    assert [x for x in left if x in {*ours, e.push_id}] == [d.push_id, e.push_id]

    # Only ops read the queue.
    for principal in (
        first.main,
        gw.auth(Principal(unique("sub"), Role.STORE_SUB, first.store_id)),
        gw.auth(NOTIFIER),
        gw.auth(gw.consumer(unique("c"))),
    ):
        denied = await refused(
            first.stub.ListPendingReviews(p.ListPendingReviewsRequest(store_id=first.store_id), metadata=principal)
        )
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED

    # The push process exports the queue's gauges (refreshed by its dispatcher loop, from the database).
    with urllib.request.urlopen(platform.stack.endpoints["push"].metrics_url, timeout=5) as metrics_page:
        exported = metrics_page.read().decode()
    assert "qun_push_oldest_pending_review_seconds " in exported
    assert "qun_push_review_window_seconds 86400.0" in exported
