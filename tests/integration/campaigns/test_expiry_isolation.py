"""One poisoned store never stops or delays the expiry job for the others (SPEC D3), on SQLite and PostgreSQL.

A store's pool is poisoned straight in the database, past what validation
ever accepts (SPEC D2): its unclaimed cash, value × prizes left, no longer fits
a signed 64-bit integer, so refunding it fails in that store's transaction.
Both ways the job runs — ops' ``RunExpiry`` and a replica's timer — every
other store gets its refunds (M9) and end cards (M6) in the same pass, the
poisoned store still gets its other steps, ``RunExpiry`` answers OK and names
the store, the failure is counted in ``qun_job_failures_total{task}``, the
timer sets the store aside instead of retrying it every tick, and every
store's ledger still reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update

from qun.campaigns.v1 import campaigns_pb2 as pb
from services.campaigns import expiry
from services.campaigns.app import CampaignsApp
from services.campaigns.expiry import ExpiryJob
from services.campaigns.models import Pool, Purchase, Refund
from services.common.clock import ManualClock
from services.common.db import Database
from services.common.loops import Loops
from services.common.rules import Rules
from services.common.settings import async_url
from services.common.validation import MAX_INT64
from tests.integration.campaigns.helpers import CASH, Stub, buy, claim, flash_sale, fountain, item, pool
from tests.support.inprocess import serve

POISONED = "store-0-poisoned"  # first in store order: the store every pass would meet first
HEALTHY = ("store-a", "store-b", "store-c")
TASK = "unclaimed_pools"
PACKET, PRIZES = 100, 5


@pytest.fixture
async def stub(db_url: str, rules: Rules, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stub]:
    # One store per pass: a poisoned store that took a place in the pass would starve the rest.
    monkeypatch.setattr(expiry, "STORES_PER_PASS", 1)
    async with serve(CampaignsApp, db_url, rules=rules, clock=clock) as channel:
        yield Stub(channel)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(async_url(db_url))
    try:
        yield database
    finally:
        await database.close()


def failures_counted() -> float:
    return REGISTRY.get_sample_value("qun_job_failures_total", {"task": TASK}) or 0.0


async def round_of_activities(stub: Stub, clock: ManualClock, store: str, tag: str) -> None:
    """A fountain whose packet expires in a day and ends in an hour (one packet claimed), and a flash sale
    ending in an hour with one purchase: due for the job a day later."""
    now = clock.now()
    prizes = await fountain(stub, store, "gs-1", now, pool(CASH, PACKET, PRIZES, 2, now + timedelta(days=1)))
    await claim(stub, store, prizes.activity_id, "c1", f"claim-{tag}")
    await item(stub, store, f"item-{tag}", stock=10)
    sale = await flash_sale(stub, store, "gs-1", f"item-{tag}", now)
    await buy(stub, store, f"item-{tag}", "c1", f"buy-{tag}", 2, flash_sale_id=sale.activity_id)


async def ledger(stub: Stub, store: str) -> pb.ListRefundsResponse:
    return await stub.ListRefunds(pb.ListRefundsRequest(store_id=store, page_size=100))


async def cards(stub: Stub, store: str) -> list[int]:
    return [c.units_sold for c in (await stub.ListEndCards(pb.ListEndCardsRequest(store_id=store))).end_cards]


async def poison(db: Database) -> None:
    """Past every bound the service checks (D2): the pool's cash left, 2^62 × 2, overflows 64 bits."""
    async with db.transaction() as session:
        await session.execute(update(Pool).where(Pool.store_id == POISONED).values(value_fen=2**62, remaining=2))


async def test_D3_a_poisoned_store_never_stops_the_expiry_job_for_the_others(
    stub: Stub, db: Database, rules: Rules, clock: ManualClock
) -> None:
    for store in (POISONED, *HEALTHY):
        await round_of_activities(stub, clock, store, "1")
    await poison(db)
    assert 2**62 * 2 > MAX_INT64
    clock.advance(timedelta(days=1, minutes=1))  # the fountains and sales ended, the claimed packets expired
    each = (PRIZES - 1) * PACKET + PACKET  # the 4 packets nobody claimed, and the 1 claimed and never used

    # Ops' trigger: OK, every other store settled, the poisoned store named.
    before = failures_counted()
    ran = await stub.RunExpiry(pb.RunExpiryRequest())
    assert [(f.job, f.store_id, f.attempts) for f in ran.failures] == [(TASK, POISONED, 1)]
    assert ran.failures[0].error and ran.failures[0].retry_in_seconds > 0
    assert (ran.pools_refunded, ran.red_packets_refunded, ran.end_cards_posted) == (3, 4, 4)
    assert ran.refunded_fen == 3 * each + PACKET  # the poisoned store's expired packet went back too
    assert ran.stores_settled == 4  # its other steps were settled: only the failing one waits
    assert failures_counted() == before + 1
    for store in HEALTHY:
        assert (await ledger(stub, store)).total_fen == each
        assert await cards(stub, store) == [2]
    poisoned = await ledger(stub, POISONED)  # the store's own ledger still reads
    assert [r.source for r in poisoned.refunds] == [pb.REFUND_SOURCE_EXPIRED_RED_PACKET]
    assert await cards(stub, POISONED) == [2]

    # A replica's timer, a day later with new work everywhere: the others get theirs on time; the poisoned
    # store fails once and is then set aside (backoff), not retried on every tick in place of the others.
    for store in HEALTHY:
        await round_of_activities(stub, clock, store, "2")
    clock.advance(timedelta(days=1, minutes=1))
    job = ExpiryJob(db, rules, clock)
    before = failures_counted()
    timer = Loops()  # as the runtime runs it
    timer.start([job.loop(0.02)])
    try:
        for _ in range(500):
            totals = [(await ledger(stub, store)).total_fen for store in HEALTHY]
            if totals == [2 * each] * len(HEALTHY) and all([await cards(stub, s) == [2, 2] for s in HEALTHY]):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # several more ticks
    finally:
        await timer.stop(grace_seconds=10)
    for store in HEALTHY:
        assert (await ledger(stub, store)).total_fen == 2 * each
        assert await cards(stub, store) == [2, 2]
    assert failures_counted() == before + 1  # tried once, then waiting out its backoff
    assert POISONED in job.backoffs[TASK].waiting()
    assert [r.source for r in (await ledger(stub, POISONED)).refunds] == [pb.REFUND_SOURCE_EXPIRED_RED_PACKET]

    # Ops retry now: still named, still nothing written for it, still OK.
    again = await stub.RunExpiry(pb.RunExpiryRequest())
    assert [(f.job, f.store_id) for f in again.failures] == [(TASK, POISONED)]
    assert (again.refunded_fen, again.stores_settled) == (0, 0)


async def test_D2_ledger_and_results_totals_past_64_bits_are_exact_sums_reported_saturated(
    stub: Stub, db: Database, clock: ManualClock
) -> None:
    """Totals over unbounded rows: rows written straight in so their sum passes 2^63 − 1; the answers
    stay OK (SQLite's sum() would raise "integer overflow") and report the largest int64."""
    store = "store-big"
    await round_of_activities(stub, clock, store, "1")
    clock.advance(timedelta(days=1, minutes=1))
    ran = await stub.RunExpiry(pb.RunExpiryRequest())
    assert list(ran.failures) == []
    async with db.transaction() as session:
        await session.execute(update(Refund).where(Refund.store_id == store).values(amount_fen=2**62))
        await session.execute(update(Purchase).where(Purchase.store_id == store).values(total_fen=2**62))
    refunds = await ledger(stub, store)
    assert len(refunds.refunds) == 2 and refunds.total_fen == MAX_INT64  # 2^63: one past the largest
    sale = next(
        a for a in (await stub.ListActivities(pb.ListActivitiesRequest(store_id=store))).activities if a.item_id
    )
    results = await stub.GetFlashSaleResults(
        pb.GetFlashSaleResultsRequest(store_id=store, activity_id=sale.activity_id)
    )
    assert results.revenue_fen == 2**62  # one purchase: exact
    await buy(stub, store, "item-1", "c2", "buy-more", 1)  # not in the sale: its revenue is unchanged
    async with db.transaction() as session:
        await session.execute(
            update(Purchase).where(Purchase.store_id == store).values(flash_sale_id=sale.activity_id, total_fen=2**62)
        )
    results = await stub.GetFlashSaleResults(
        pb.GetFlashSaleResultsRequest(store_id=store, activity_id=sale.activity_id)
    )
    assert (results.purchases, results.revenue_fen) == (2, MAX_INT64)
