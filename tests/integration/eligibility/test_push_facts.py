"""The push facts of the eligibility service over loopback, on SQLite and PostgreSQL (SPEC P1, P2, P3, P5).

GetPushFacts counts in SQL what ``rules.is_old_customer`` defines; the
boundary cases here hold the two to the same answer. StreamPushAudience sends
the recipients in chunks, most recent buyers first for a recall push.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from qun.common.v1 import facts_pb2 as f
from qun.eligibility.v1 import eligibility_pb2 as e
from qun.eligibility.v1 import eligibility_pb2_grpc
from services.common.clock import ManualClock
from services.common.errors import field_violations, status_from_error
from services.common.rules import Rules
from services.eligibility import rules as domain_rules
from services.eligibility.app import EligibilityApp
from tests.integration.eligibility import facts as F
from tests.support.inprocess import serve

NOW = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)  # 20:00 China Standard Time
Stub = eligibility_pb2_grpc.EligibilityServiceStub
DAY = timedelta(days=1)

# consumer → paid times; who follows decides fan (P3) or recall audience (P2).
BUYERS: dict[str, list[datetime]] = {
    "two-days": [NOW - DAY, NOW - 2 * DAY],
    "same-day": [NOW - timedelta(hours=1), NOW - timedelta(hours=2)],
    "across-local-midnight": [datetime(2026, 8, 30, 15, 59, tzinfo=UTC), datetime(2026, 8, 30, 16, 1, tzinfo=UTC)],
    "one-local-day": [datetime(2026, 8, 30, 0, 1, tzinfo=UTC), datetime(2026, 8, 30, 15, 59, tzinfo=UTC)],
    "window-edge": [datetime(2026, 2, 27, 16, 0, tzinfo=UTC), NOW - 3 * DAY],  # Feb 28 00:00 in China
    "before-window": [datetime(2026, 2, 27, 15, 59, tzinfo=UTC), NOW - 3 * DAY],
    "later-today": [NOW - DAY, NOW + timedelta(hours=3)],  # 23:00 in China: counts today
    "tomorrow": [NOW - DAY, NOW + timedelta(hours=4)],  # 00:00 in China: counts from tomorrow
    "once": [NOW - DAY],
    "three-days": [NOW - 4 * DAY, NOW - 5 * DAY, NOW - 6 * DAY],
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def stub(db_url: str, rules: Rules, clock: ManualClock) -> AsyncIterator[Stub]:
    async with serve(EligibilityApp, db_url, rules=rules, clock=clock) as channel:
        yield Stub(channel)


def follow(store: str, consumer: str, following: bool = True) -> f.Fact:
    return f.Fact(follow=f.FollowFact(store_id=store, consumer_id=consumer, following=following))


def subscription(store: str, consumer: str, subscribed: bool = True) -> f.Fact:
    return f.Fact(push_subscription=f.PushSubscriptionFact(store_id=store, consumer_id=consumer, subscribed=subscribed))


def broadcast(store: str, broadcast_id: str, at: datetime) -> f.Fact:
    return f.Fact(broadcast=f.BroadcastFact(store_id=store, broadcast_id=broadcast_id, published_at=F.ts(at)))


def revisit(store: str, bp: int, at: datetime) -> f.Fact:
    return f.Fact(revisit_rate=f.RevisitRateFact(store_id=store, rate_bp=bp, computed_at=F.ts(at)))


def orders(store: str, prefix: str, buyers: dict[str, list[datetime]]) -> list[f.Fact]:
    return [
        F.order(f"{prefix}{consumer}-{i}", store, f"{prefix}{consumer}", 100, at)
        for consumer, times in buyers.items()
        for i, at in enumerate(times)
    ]


async def audience(stub: Stub, store: str, kind: int, limit: int = 0, chunk: int = 0) -> list[list[str]]:
    request = e.StreamPushAudienceRequest(store_id=store, audience=kind, limit=limit, chunk_size=chunk)
    return [list(m.consumer_ids) for m in [m async for m in stub.StreamPushAudience(request)]]


async def test_P3_P1_P2_push_facts_counted_as_the_rules_define_them(
    stub: Stub, rules: Rules, clock: ManualClock
) -> None:
    facts = [F.store("s1", "m1"), F.account("m1", f.ACCOUNT_ROLE_STORE_MAIN, "s1")]
    facts += orders("s1", "fan-", BUYERS) + [follow("s1", f"fan-{c}") for c in BUYERS]
    facts += orders("s1", "old-", BUYERS)  # the same buyers, not following: the recall side
    facts += orders("s2", "fan-", {"elsewhere": [NOW - DAY, NOW - 2 * DAY]}) + [follow("s1", "fan-elsewhere")]
    facts += [follow("s1", "fan-two-days-gone", False)]
    facts += [subscription("s1", f"sub{i}") for i in range(12)] + [subscription("s1", "sub0", False)]
    facts += [broadcast("s1", "b-edge", NOW - 7 * DAY), broadcast("s1", "b-old", NOW - 7 * DAY - timedelta(seconds=1))]
    facts += [broadcast("s1", f"b{i}", NOW - timedelta(hours=i)) for i in range(4)]
    facts += [broadcast("s1", "b-ahead", NOW + timedelta(hours=1))]
    facts += [
        revisit("s1", 450, NOW - 8 * DAY),
        revisit("s1", 520, NOW - DAY),
        revisit("s1", 999, NOW + timedelta(hours=2)),
    ]
    await stub.IngestFacts(F.ingest(*facts))

    found = await stub.GetPushFacts(e.GetPushFactsRequest(store_id="s1"))
    expected = sum(
        domain_rules.is_old_customer(times, NOW, rules.push, rules.calendar.market) for times in BUYERS.values()
    )
    assert expected == 5  # two-days, across-local-midnight, window-edge, later-today, three-days
    assert found.old_customer_fans == expected
    assert found.main_account_id == "m1"
    assert found.subscribers == 11
    assert found.recent_broadcasts == 5  # b-edge and b0..b3
    assert found.revisit_rate_bp == 520  # the newest computed by now

    clock.set(NOW + timedelta(hours=3, minutes=59, seconds=59))  # 23:59:59 in China: still today
    assert (await stub.GetPushFacts(e.GetPushFactsRequest(store_id="s1"))).old_customer_fans == 5
    clock.set(NOW + timedelta(hours=4))  # tomorrow: window-edge's first day leaves the half year, tomorrow's comes
    assert (await stub.GetPushFacts(e.GetPushFactsRequest(store_id="s1"))).old_customer_fans == 5
    assert not domain_rules.is_old_customer(BUYERS["window-edge"], clock.now(), rules.push, rules.calendar.market)
    clock.set(NOW + 10 * DAY)  # two-days … later-today keep theirs; across-local-midnight's Aug 30 and 31 too
    expected = sum(
        domain_rules.is_old_customer(times, clock.now(), rules.push, rules.calendar.market) for times in BUYERS.values()
    )
    assert (await stub.GetPushFacts(e.GetPushFactsRequest(store_id="s1"))).old_customer_fans == expected
    clock.set(NOW + 200 * DAY)  # every order has left the half year
    assert (await stub.GetPushFacts(e.GetPushFactsRequest(store_id="s1"))).old_customer_fans == 0

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetPushFacts(e.GetPushFactsRequest(store_id="nowhere"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_P2_recall_audience_most_recent_buyers_first_up_to_the_limit_in_chunks(stub: Stub) -> None:
    buyers = {f"c{i}": [NOW - (i + 1) * DAY, NOW - (i + 2) * DAY] for i in range(7)}
    facts = [F.store("s1", "m1"), *orders("s1", "", buyers), follow("s1", "c2")]  # c2 is a fan: not recalled
    facts += orders("s1", "", {"z-once": [NOW - timedelta(hours=1)]})  # bought once: no old customer
    facts += [subscription("s1", s) for s in ("sb", "sa", "sc")] + [follow("s1", "fz"), follow("s1", "fa")]
    await stub.IngestFacts(F.ingest(*facts))

    chunks = await audience(stub, "s1", e.PUSH_AUDIENCE_RECALL, limit=5, chunk=2)
    assert chunks == [["c0", "c1"], ["c3", "c4"], ["c5"]]
    assert [c for chunk in await audience(stub, "s1", e.PUSH_AUDIENCE_RECALL) for c in chunk] == [
        "c0",
        "c1",
        "c3",
        "c4",
        "c5",
        "c6",
    ]
    assert await audience(stub, "s1", e.PUSH_AUDIENCE_SUBSCRIBERS) == [["sa", "sb", "sc"]]
    assert await audience(stub, "s1", e.PUSH_AUDIENCE_FANS, limit=2) == [["c2", "fa"]]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audience(stub, "nowhere", e.PUSH_AUDIENCE_FANS)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audience(stub, "s1", e.PUSH_AUDIENCE_UNSPECIFIED, limit=-1)
    assert {v.field for v in field_violations(status_from_error(caught.value))} == {"audience", "limit"}


async def test_push_facts_are_validated_whole(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IngestFacts(
            F.ingest(
                revisit("s1", 10_001, NOW),
                broadcast("s1", "", NOW),
                subscription("s1", "bad id!"),
                f.Fact(broadcast=f.BroadcastFact(store_id="s1", broadcast_id="b1")),
            )
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in field_violations(status_from_error(caught.value))} == {
        "facts[0].revisit_rate.rate_bp",
        "facts[1].broadcast.broadcast_id",
        "facts[2].push_subscription.consumer_id",
        "facts[3].broadcast.published_at",
    }
