"""The stored old-customer fan counts (SPEC P3) against the definition, on SQLite and PostgreSQL.

Orders and follows arrive in random batches, late, re-sent with another day or
another buyer, some batches at once; after each, a store's count on several
days is what ``rules.is_old_customer`` says of the facts as they stand. A
recount from scratch (a new basis, or a bulk load) gives the same counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select

from qun.common.v1 import facts_pb2 as f
from qun.eligibility.v1 import eligibility_pb2 as e
from qun.eligibility.v1 import eligibility_pb2_grpc
from services.common.clock import ManualClock
from services.common.db import Database
from services.common.rules import Rules
from services.common.settings import async_url
from services.eligibility import old_fans
from services.eligibility import rules as domain_rules
from services.eligibility.app import EligibilityApp
from services.eligibility.old_fans import basis, old_customers, old_fan_basis, recount
from services.eligibility.repository import follows, paid_orders
from tests.integration.eligibility import facts as F
from tests.integration.eligibility.test_push_facts import follow
from tests.support.inprocess import serve

START = datetime(2027, 1, 1, 4, 0, tzinfo=UTC)  # noon in China
STORES = ("s1", "s2")
CONSUMERS = tuple(f"c{i}" for i in range(6))
Stub = eligibility_pb2_grpc.EligibilityServiceStub


@dataclasses.dataclass
class Facts:
    """The facts as they stand after every batch: the last per key wins."""

    orders: dict[tuple[str, str], tuple[str, datetime]] = dataclasses.field(default_factory=dict)
    fans: dict[tuple[str, str], bool] = dataclasses.field(default_factory=dict)

    def expected(self, store: str, now: datetime, rules: Rules) -> int:
        bought: dict[str, list[datetime]] = {}
        for (order_store, _), (consumer, at) in self.orders.items():
            if order_store == store:
                bought.setdefault(consumer, []).append(at)
        market = rules.calendar.market
        return sum(
            1
            for consumer, times in bought.items()
            if self.fans.get((store, consumer)) and domain_rules.is_old_customer(times, now, rules.push, market)
        )


def random_batch(
    rnd: random.Random, facts: Facts, size: int, *, follows: bool = True, resend: bool = True
) -> list[f.Fact]:
    """Orders (new, or re-sent with another day and buyer) and follows, of random buyers of the two stores."""
    batch = []
    for _ in range(size):
        store, consumer = rnd.choice(STORES), rnd.choice(CONSUMERS)
        if follows and rnd.random() < 0.3:
            following = rnd.random() < 0.7
            facts.fans[(store, consumer)] = following
            batch.append(follow(store, consumer, following))
            continue
        known = [key for key in facts.orders if key[0] == store]
        order_id = (
            rnd.choice(known)[1] if resend and known and rnd.random() < 0.3 else f"o{len(facts.orders)}-{rnd.random()}"
        )
        at = START + timedelta(days=rnd.randrange(0, 400), hours=rnd.randrange(0, 24))
        facts.orders[(store, order_id)] = (consumer, at)
        batch.append(F.order(order_id, store, consumer, 100, at))
    return batch


async def counts(stub: Stub, clock: ManualClock, days: list[int]) -> dict[tuple[str, int], int]:
    found = {}
    for day in days:
        clock.set(START + timedelta(days=day))
        for store in STORES:
            found[(store, day)] = (await stub.GetPushFacts(e.GetPushFactsRequest(store_id=store))).old_customer_fans
    return found


def expected_counts(facts: Facts, days: list[int], rules: Rules) -> dict[tuple[str, int], int]:
    return {(store, day): facts.expected(store, START + timedelta(days=day), rules) for day in days for store in STORES}


@pytest.mark.parametrize("seed", [1, 2])
async def test_P3_counts_as_facts_arrive_late_resent_and_at_once_match_the_definition(
    db_url: str, rules: Rules, seed: int
) -> None:
    rnd = random.Random(seed)
    clock = ManualClock(START + timedelta(days=420))  # every order in the past when it arrives
    facts = Facts()
    days = [0, 1, 30, 120, 181, 182, 183, 250, 365, 420, 580, 600]
    async with serve(EligibilityApp, db_url, rules=rules, clock=clock) as channel:
        stub = Stub(channel)
        await stub.IngestFacts(F.ingest(*(F.store(s, f"m-{s}") for s in STORES)))
        for _ in range(6):
            clock.set(START + timedelta(days=420))
            await stub.IngestFacts(F.ingest(*random_batch(rnd, facts, 12)))
            # Two batches at once for the same buyers; which commits last must not matter, so only one re-sends.
            at_once = [random_batch(rnd, facts, 6), random_batch(rnd, facts, 6, follows=False, resend=False)]
            await asyncio.gather(*(stub.IngestFacts(F.ingest(*batch)) for batch in at_once))
            assert await counts(stub, clock, days) == expected_counts(facts, days, rules)
        incremental = await counts(stub, clock, days)
        assert any(incremental.values())  # the random facts made old-customer fans

    db = Database(async_url(db_url), pool_size=1)
    try:
        async with db.read() as conn:
            stored = sorted((await conn.execute(select(old_customers))).all())
        async with db.transaction() as session:
            await session.execute(delete(old_fan_basis))  # as if the basis had changed: a recount at start
    finally:
        await db.close()
    async with serve(EligibilityApp, db_url, rules=rules, clock=clock) as channel:
        assert await counts(Stub(channel), clock, days) == incremental
    db = Database(async_url(db_url), pool_size=1)
    try:
        async with db.read() as conn:
            recounted = sorted((await conn.execute(select(old_customers))).all())
    finally:
        await db.close()
    # A buyer whose every order moved to another buyer keeps an empty row where a recount keeps none.
    assert [row for row in stored if row.spans or row.fan] == [row for row in recounted if row.spans or row.fan]


async def test_P3_other_numbers_in_the_rules_file_recount_every_store_on_start(db_url: str, rules: Rules) -> None:
    clock = ManualClock(START + timedelta(days=10))
    buyers = {"c0": [1, 2], "c1": [1, 2, 3], "c2": [4]}
    batch = [F.store("s1", "m1")]
    batch += [F.order(f"{c}-{d}", "s1", c, 100, START + timedelta(days=d)) for c, ds in buyers.items() for d in ds]
    batch += [follow("s1", c) for c in buyers]
    async with serve(EligibilityApp, db_url, rules=rules, clock=clock) as channel:
        await Stub(channel).IngestFacts(F.ingest(*batch))
        assert (await Stub(channel).GetPushFacts(e.GetPushFactsRequest(store_id="s1"))).old_customer_fans == 2
    stricter = dataclasses.replace(rules, push=dataclasses.replace(rules.push, old_customer_min_days=3))
    async with serve(EligibilityApp, db_url, rules=stricter, clock=clock) as channel:
        assert (await Stub(channel).GetPushFacts(e.GetPushFactsRequest(store_id="s1"))).old_customer_fans == 1
    db = Database(async_url(db_url), pool_size=1)
    try:
        async with db.read() as conn:
            assert (await conn.execute(select(old_fan_basis.c.basis))).scalar() == basis(stricter)
    finally:
        await db.close()


async def test_P3_orders_loaded_past_the_ingestion_are_counted_by_a_recount(
    db_url: str, rules: Rules, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk load (a migration from another system) writes orders and follows directly, then recounts."""
    monkeypatch.setattr(old_fans, "RECOUNT_PAGE", 70)  # pages that end inside a store's buyers

    clock = ManualClock(START + timedelta(days=10))
    async with serve(EligibilityApp, db_url, rules=rules, clock=clock) as channel:
        await Stub(channel).IngestFacts(F.ingest(F.store("s1", "m1")))
        db = Database(async_url(db_url), pool_size=1)
        try:
            async with db.transaction() as session:
                await session.execute(
                    paid_orders.insert(),
                    [
                        {
                            "store_id": "s1",
                            "order_id": f"o{i}",
                            "consumer_id": f"c{i // 2}",
                            "amount_fen": 100,
                            "paid_at": START + timedelta(days=i % 2),
                        }
                        for i in range(1_201)
                    ],
                )
                await session.execute(
                    follows.insert(),
                    [{"store_id": "s1", "consumer_id": f"c{i}", "following": True} for i in range(601)],
                )
        finally:
            await db.close()
        stub = Stub(channel)
        assert (await stub.GetPushFacts(e.GetPushFactsRequest(store_id="s1"))).old_customer_fans == 0
        assert await recount(async_url(db_url), rules) == 601
        assert (await stub.GetPushFacts(e.GetPushFactsRequest(store_id="s1"))).old_customer_fans == 600
