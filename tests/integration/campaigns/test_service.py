"""CampaignsService over a real loopback socket, on SQLite and PostgreSQL.

Each test names the SPEC rules it guards and fails when that rule breaks;
refusals are read from the rich status a caller gets, and "nothing changed"
is read back through the service.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import REGISTRY

from qun.campaigns.v1 import campaigns_pb2 as pb
from qun.common.v1 import facts_pb2
from services.campaigns.app import CampaignsApp
from services.campaigns.orders import OrderRepository
from services.common.clock import ManualClock
from services.common.rules import Rules
from tests.integration.campaigns.helpers import (
    CASH,
    COUPON,
    Stub,
    activity,
    buy,
    claim,
    fields_of,
    flash_sale,
    fountain,
    item,
    pool,
    reasons_of,
    rules_of,
    stock,
    ts,
)
from tests.support.inprocess import serve
from tests.support.request_ids import refused_as_reused

S = "store-1"
G = "gs_1"


def small_rules(rules: Rules) -> Rules:
    return dataclasses.replace(rules, campaigns=dataclasses.replace(rules.campaigns, wallet_size=3))


@pytest.fixture
async def stub(db_url: str, rules: Rules, clock: ManualClock) -> AsyncIterator[Stub]:
    async with serve(CampaignsApp, db_url, rules=small_rules(rules), clock=clock) as channel:
        yield Stub(channel)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- M1, M2, M5: a flash sale sells from the item's one stock ---------------------------------


async def test_M2_flash_and_normal_sales_draw_on_one_stock_that_never_goes_below_zero(
    stub: Stub, clock: ManualClock
) -> None:
    await item(stub, S, "i1", stock=5)
    sale = await flash_sale(stub, S, G, "i1", clock.now())
    assert sale.members_only  # M5: 群专享

    flash = await buy(stub, S, "i1", "c1", "r1", 3, flash_sale_id=sale.activity_id)
    assert flash.stock_left == 2 and flash.purchase.price.unit_price_fen == 6_000
    normal = await buy(stub, S, "i1", "c2", "r2", 2)
    assert normal.stock_left == 0 and normal.purchase.price.unit_price_fen == 10_000
    for request_id, kwargs in (("r3", {"flash_sale_id": sale.activity_id}), ("r4", {})):
        with pytest.raises(grpc.aio.AioRpcError) as sold_out:
            await buy(stub, S, "i1", "c3", request_id, 1, **kwargs)  # type: ignore[arg-type]
        assert sold_out.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert reasons_of(sold_out.value) == ["SOLD_OUT"] and rules_of(sold_out.value) == ["M2"]
    assert await stock(stub, S, "i1") == 0

    restocked = await stub.Restock(pb.RestockRequest(request_id="rs1", store_id=S, item_id="i1", quantity=4))
    again = await stub.Restock(pb.RestockRequest(request_id="rs1", store_id=S, item_id="i1", quantity=4))
    assert restocked.item.stock == 4 and again.replayed and again.item.stock == 4  # a retry adds nothing
    results = await stub.GetFlashSaleResults(pb.GetFlashSaleResultsRequest(store_id=S, activity_id=sale.activity_id))
    assert (results.units_sold, results.purchases, results.stock_left) == (3, 1, 4)


async def test_M2_a_quantity_beyond_the_stock_changes_nothing(stub: Stub, clock: ManualClock) -> None:
    await item(stub, S, "i1", stock=3)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await buy(stub, S, "i1", "c1", "r1", 4)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rules_of(refused.value) == ["M2"]
    assert await stock(stub, S, "i1") == 3
    listed = await stub.ListSales(pb.ListSalesRequest(store_id=S))
    assert list(listed.purchases) == []


async def test_M1_flash_sales_refuse_multi_sku_and_price_range_items(stub: Stub, clock: ManualClock) -> None:
    await item(stub, S, "multi", skus=3, price=900, high=1200)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await flash_sale(stub, S, G, "multi", clock.now())
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reasons_of(refused.value) == ["MULTI_SKU_ITEM", "PRICE_RANGE_ITEM"]
    assert list((await stub.ListActivities(pb.ListActivitiesRequest(store_id=S))).activities) == []
    # A group buy may sell it; M1 is the flash sale's rule.
    created = await stub.CreateActivity(
        activity(S, G, clock.now(), group_buy=pb.GroupBuySpec(item_id="multi", group_price_fen=800, group_size=2))
    )
    assert created.activity.kind == pb.ACTIVITY_KIND_GROUP_BUY


async def test_M5_non_members_do_not_get_the_flash_price_but_may_buy_at_the_item_price(
    stub: Stub, clock: ManualClock
) -> None:
    await item(stub, S, "i1", stock=5)
    sale = await flash_sale(stub, S, G, "i1", clock.now())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await buy(stub, S, "i1", "outsider", "r1", 1, flash_sale_id=sale.activity_id, member=False)
    assert rules_of(refused.value) == ["M5"]
    assert await stock(stub, S, "i1") == 5
    normal = await buy(stub, S, "i1", "outsider", "r2", 1, member=False)
    assert normal.purchase.price.unit_price_fen == 10_000 and not normal.purchase.flash_sale_id


# -- M3: lowest-price bookkeeping per sale ----------------------------------------------------


async def test_M3_each_flash_sale_sale_records_the_lowest_price_records_it_counts_toward(
    stub: Stub, clock: ManualClock
) -> None:
    await item(stub, S, "tb", platform=facts_pb2.PLATFORM_TAOBAO)
    await item(stub, S, "tm", platform=facts_pb2.PLATFORM_TMALL)
    tb_sale = await flash_sale(stub, S, G, "tb", clock.now())
    tm_sale = await flash_sale(stub, S, G, "tm", clock.now())
    await buy(stub, S, "tb", "c1", "r1", flash_sale_id=tb_sale.activity_id)
    await buy(stub, S, "tm", "c1", "r2", flash_sale_id=tm_sale.activity_id)
    await buy(stub, S, "tm", "c1", "r3")  # at the item price: no bookkeeping

    def records(purchase: pb.PurchaseRecord) -> dict[int, bool]:
        return {r.record: r.counts for r in purchase.price_records}

    taobao = (await stub.ListSales(pb.ListSalesRequest(store_id=S, item_id="tb"))).purchases
    assert records(taobao[0]) == {
        pb.LOWEST_PRICE_RECORD_MARKET_30_DAY: False,
        pb.LOWEST_PRICE_RECORD_JUHUASUAN: True,
        pb.LOWEST_PRICE_RECORD_TAOQIANGGOU: True,
    }
    tmall = (await stub.ListSales(pb.ListSalesRequest(store_id=S, item_id="tm"))).purchases
    assert len(tmall) == 2
    by_sale = {p.flash_sale_id: p for p in tmall}
    assert records(by_sale[tm_sale.activity_id]) == {
        pb.LOWEST_PRICE_RECORD_HISTORICAL: False,
        pb.LOWEST_PRICE_RECORD_PROMOTIONAL_30_DAY: True,
        pb.LOWEST_PRICE_RECORD_JUHUASUAN: True,
        pb.LOWEST_PRICE_RECORD_TAOQIANGGOU: True,
    }
    assert list(by_sale[""].price_records) == []
    one = await stub.GetPurchase(
        pb.GetPurchaseRequest(store_id=S, purchase_id=by_sale[tm_sale.activity_id].purchase_id)
    )
    assert records(one.purchase) == records(by_sale[tm_sale.activity_id])


# -- M4, M8: pricing an order -----------------------------------------------------------------


async def test_M4_the_flash_price_stacks_with_cash_red_packets_store_red_packets_and_a_coupon(
    stub: Stub, clock: ManualClock, rules: Rules
) -> None:
    now = clock.now()
    await item(stub, S, "i1", stock=5)
    sale = await flash_sale(stub, S, G, "i1", now)
    prizes = await fountain(
        stub,
        S,
        G,
        now,
        pool(CASH, 100, 20, 20, now + timedelta(days=3)),
        pool(COUPON, 500, 4, 4, now + timedelta(days=3)),
    )
    cash_pool, coupon_pool = prizes.pools
    cash = [await claim(stub, S, prizes.activity_id, "c1", f"cash-{i}", cash_pool.pool_id) for i in range(2)]
    coupons = [await claim(stub, S, prizes.activity_id, "c1", "coupon-0", coupon_pool.pool_id)]
    order = pb.Order(
        item_id="i1",
        quantity=2,
        flash_sale_id=sale.activity_id,
        cash_red_packet_ids=[c.claim_id for c in cash],
        store_coupon_ids=[c.claim_id for c in coupons],
        store_red_packet_fen=[300],
    )
    priced = await stub.PriceOrder(pb.PriceOrderRequest(store_id=S, consumer_id="c1", order=order, group_member=True))
    assert priced.price.flash_price and priced.price.subtotal_fen == 12_000
    assert priced.price.total_fen == 12_000 - 200 - 500 - 300  # M4: everything stacks

    # Pricing changes nothing: the stock and the prizes are as they were.
    assert priced.stock == 5
    wallet = await stub.ListWallet(pb.ListWalletRequest(store_id=S, consumer_id="c1"))
    assert wallet.held == 3 and all(c.state == pb.CLAIM_STATE_HELD for c in wallet.claims)


async def test_M8_an_order_with_eleven_cash_red_packets_or_two_coupons_is_refused_and_nothing_changes(
    db_url: str, rules: Rules, clock: ManualClock
) -> None:
    roomy = dataclasses.replace(rules, campaigns=dataclasses.replace(rules.campaigns, wallet_size=20))
    async with serve(CampaignsApp, db_url, rules=roomy, clock=clock) as channel:
        stub = Stub(channel)
        now = clock.now()
        await item(stub, S, "i1", stock=5)
        prizes = await fountain(
            stub,
            S,
            G,
            now,
            pool(CASH, 100, 11, 11, now + timedelta(days=3)),
            pool(COUPON, 500, 2, 2, now + timedelta(days=3)),
        )
        cash_pool, coupon_pool = prizes.pools
        cash = [
            (await claim(stub, S, prizes.activity_id, "c1", f"cash-{i}", cash_pool.pool_id)).claim_id for i in range(11)
        ]
        coupons = [
            (await claim(stub, S, prizes.activity_id, "c1", f"coupon-{i}", coupon_pool.pool_id)).claim_id
            for i in range(2)
        ]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await buy(stub, S, "i1", "c1", "r1", cash=tuple(cash), coupons=tuple(coupons))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert reasons_of(refused.value) == ["TOO_MANY_CASH_RED_PACKETS", "TOO_MANY_STORE_COUPONS"]
        assert await stock(stub, S, "i1") == 5
        wallet = await stub.ListWallet(pb.ListWalletRequest(store_id=S, consumer_id="c1"))
        assert wallet.held == 13 and all(c.state == pb.CLAIM_STATE_HELD for c in wallet.claims)

        bought = await buy(stub, S, "i1", "c1", "r2", cash=tuple(cash[:10]), coupons=tuple(coupons[:1]))
        assert bought.purchase.price.total_fen == 10_000 - 1_000 - 500
        with pytest.raises(grpc.aio.AioRpcError) as reused:
            await buy(stub, S, "i1", "c1", "r3", cash=(cash[0],))
        assert reasons_of(reused.value) == ["PRIZE_ALREADY_USED"]
        # Cancelling the order returns its stock and its prizes.
        cancelled = await stub.CancelPurchase(
            pb.CancelPurchaseRequest(request_id="x1", store_id=S, purchase_id=bought.purchase.purchase_id)
        )
        twice = await stub.CancelPurchase(
            pb.CancelPurchaseRequest(request_id="x1", store_id=S, purchase_id=bought.purchase.purchase_id)
        )
        assert cancelled.stock == 5 and twice.replayed and twice.stock == 5
        wallet = await stub.ListWallet(pb.ListWalletRequest(store_id=S, consumer_id="c1"))
        assert wallet.held == 13


# -- M6: end cards and results ----------------------------------------------------------------


async def test_M6_a_flash_sale_posts_one_end_card_with_the_units_sold_when_it_ends(
    stub: Stub, clock: ManualClock
) -> None:
    start = clock.now()
    await item(stub, S, "i1", stock=10)
    timed = await flash_sale(stub, S, G, "i1", start, title="限时抢购")
    early = await flash_sale(stub, S, G, "i1", start, title="提前结束")
    await buy(stub, S, "i1", "c1", "r1", 2, flash_sale_id=timed.activity_id)
    await buy(stub, S, "i1", "c2", "r2", 3, flash_sale_id=timed.activity_id)
    await buy(stub, S, "i1", "c2", "r3", 1, flash_sale_id=early.activity_id)

    ended = await stub.EndActivity(pb.EndActivityRequest(store_id=S, activity_id=early.activity_id))
    assert ended.end_card.units_sold == 1 and ended.end_card.seq == 1
    with pytest.raises(grpc.aio.AioRpcError) as after_end:
        await buy(stub, S, "i1", "c3", "r4", 1, flash_sale_id=early.activity_id)
    assert rules_of(after_end.value) == ["M6"]

    assert (await stub.RunExpiry(pb.RunExpiryRequest())).end_cards_posted == 0  # the timed one still runs
    clock.advance(timedelta(hours=1))
    first = await stub.RunExpiry(pb.RunExpiryRequest())
    second = await stub.RunExpiry(pb.RunExpiryRequest())
    assert (first.end_cards_posted, second.end_cards_posted) == (1, 0)
    cards = (await stub.ListEndCards(pb.ListEndCardsRequest(store_id=S))).end_cards
    assert [(c.title, c.units_sold, c.purchases, c.seq) for c in cards] == [
        ("提前结束", 1, 1, 1),
        ("限时抢购", 5, 2, 2),
    ]
    later = await stub.ListEndCards(pb.ListEndCardsRequest(store_id=S, after_seq=1))
    assert [c.seq for c in later.end_cards] == [2] and later.last_seq == 2
    results = await stub.GetFlashSaleResults(pb.GetFlashSaleResultsRequest(store_id=S, activity_id=timed.activity_id))
    assert (results.units_sold, results.buyers, results.revenue_fen) == (5, 2, 5 * 6_000)
    assert results.end_card.seq == 2 and not results.activity.running


# -- M7, M9, M10: the red-packet fountain -----------------------------------------------------


async def test_M10_claims_stop_at_the_per_user_limit_and_the_wallet_size(stub: Stub, clock: ManualClock) -> None:
    now = clock.now()
    prizes = await fountain(
        stub,
        S,
        G,
        now,
        pool(CASH, 100, 10, 2, now + timedelta(days=1)),
        pool(COUPON, 500, 10, 1, now + timedelta(days=1)),
    )
    cash_pool, coupon_pool = prizes.pools
    first = await claim(stub, S, prizes.activity_id, "c1", "a1", cash_pool.pool_id)
    await claim(stub, S, prizes.activity_id, "c1", "a2", cash_pool.pool_id)
    with pytest.raises(grpc.aio.AioRpcError) as limit:
        await claim(stub, S, prizes.activity_id, "c1", "a3", cash_pool.pool_id)
    assert reasons_of(limit.value) == ["CLAIM_LIMIT_REACHED"] and rules_of(limit.value) == ["M10"]
    await claim(stub, S, prizes.activity_id, "c1", "a4", coupon_pool.pool_id)
    # Wallet of 3 (small_rules) is full now, and every pool is at its limit: both are named.
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await claim(stub, S, prizes.activity_id, "c1", "a5")
    assert reasons_of(full.value) == ["WALLET_FULL", "CLAIM_LIMIT_REACHED"]
    replay = await claim(stub, S, prizes.activity_id, "c1", "a1", cash_pool.pool_id)
    wallet = await stub.ListWallet(pb.ListWalletRequest(store_id=S, consumer_id="c1"))
    assert wallet.held == 3 and wallet.wallet_size == 3 and replay == first
    fetched = await stub.GetActivity(pb.GetActivityRequest(store_id=S, activity_id=prizes.activity_id))
    assert [p.remaining for p in fetched.activity.pools] == [8, 9]
    with pytest.raises(grpc.aio.AioRpcError) as outsider:
        await stub.ClaimPrize(
            pb.ClaimPrizeRequest(request_id="o1", store_id=S, activity_id=prizes.activity_id, consumer_id="c9")
        )
    assert rules_of(outsider.value) == ["M7"] and reasons_of(outsider.value) == ["NOT_GROUP_MEMBER"]


async def test_M9_unused_cash_goes_back_to_the_merchant_once(stub: Stub, clock: ManualClock) -> None:
    now = clock.now()
    await item(stub, S, "i1", stock=5)
    prizes = await fountain(
        stub,
        S,
        G,
        now,
        pool(CASH, 100, 5, 3, now + timedelta(days=2)),
        pool(COUPON, 500, 5, 1, now + timedelta(days=2)),
        minutes=60,
    )
    cash_pool, coupon_pool = prizes.pools
    used, kept = [await claim(stub, S, prizes.activity_id, "c1", f"k{i}", cash_pool.pool_id) for i in range(2)]
    await claim(stub, S, prizes.activity_id, "c1", "k3", coupon_pool.pool_id)
    await buy(stub, S, "i1", "c1", "r1", cash=(used.claim_id,))

    clock.advance(timedelta(hours=2))  # the fountain ended: its 3 unclaimed packets return
    first = await stub.RunExpiry(pb.RunExpiryRequest())
    assert (first.pools_refunded, first.red_packets_refunded, first.refunded_fen) == (1, 0, 300)
    clock.advance(timedelta(days=2))  # the packets expired: the unused one returns, the used one does not
    second = await stub.RunExpiry(pb.RunExpiryRequest())
    assert (second.red_packets_refunded, second.coupons_expired, second.refunded_fen) == (1, 1, 100)
    third = await stub.RunExpiry(pb.RunExpiryRequest())
    assert third.refunded_fen == 0 and third.red_packets_refunded == 0

    ledger = await stub.ListRefunds(pb.ListRefundsRequest(store_id=S))
    assert ledger.total_fen == 400
    assert sorted((r.source, r.source_id, r.amount_fen) for r in ledger.refunds) == sorted(
        [
            (pb.REFUND_SOURCE_UNCLAIMED_POOL, cash_pool.pool_id, 300),
            (pb.REFUND_SOURCE_EXPIRED_RED_PACKET, kept.claim_id, 100),
        ]
    )
    states = {
        c.claim_id: c.state for c in (await stub.ListWallet(pb.ListWalletRequest(store_id=S, consumer_id="c1"))).claims
    }
    assert states[used.claim_id] == pb.CLAIM_STATE_USED and states[kept.claim_id] == pb.CLAIM_STATE_REFUNDED
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await buy(stub, S, "i1", "c1", "r2", cash=(kept.claim_id,))
    assert rules_of(expired.value) == ["M9"]


# -- M11, M13: activities at once, every kind counted -----------------------------------------


async def test_M11_M13_ten_activities_of_every_kind_at_once_and_the_eleventh_is_refused(
    stub: Stub, clock: ManualClock
) -> None:
    now = clock.now()
    await item(stub, S, "i1")
    expires = now + timedelta(days=1)
    specs: list[dict[str, object]] = [
        {"flash_sale": pb.FlashSaleSpec(item_id="i1", flash_price_fen=5_000)},
        {"red_packet_fountain": pb.FountainSpec(pools=[pool(CASH, 100, 5, 1, expires)])},
        {"group_buy": pb.GroupBuySpec(item_id="i1", group_price_fen=8_000, group_size=3)},
        {"voting": pb.VotingSpec(options=["红", "蓝"])},
        {"check_in": pb.CheckInSpec()},
        {"lucky_red_packet": pb.LuckyRedPacketSpec(value_fen=88, count=10, expires_at=ts(expires))},
    ]
    created = []
    for i in range(10):
        reply = await stub.CreateActivity(activity(S, G, now, **specs[i % len(specs)]))
        created.append(reply.activity)
        assert reply.concurrent_activities == i + 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateActivity(activity(S, G, now, check_in=pb.CheckInSpec()))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rules_of(refused.value) == ["M11"]
    # Another group-set has its own ten; a later window of this one is free; ending one frees its slot.
    await stub.CreateActivity(activity(S, "gs_2", now, check_in=pb.CheckInSpec()))
    await stub.CreateActivity(activity(S, G, now, start=timedelta(hours=2), check_in=pb.CheckInSpec()))
    await stub.EndActivity(pb.EndActivityRequest(store_id=S, activity_id=created[3].activity_id))
    await stub.CreateActivity(activity(S, G, now, check_in=pb.CheckInSpec()))
    listed = await stub.ListActivities(pb.ListActivitiesRequest(store_id=S, group_set_id=G, page_size=7))
    rest = await stub.ListActivities(
        pb.ListActivitiesRequest(store_id=S, group_set_id=G, page_size=7, page_token=listed.next_page_token)
    )
    assert len(listed.activities) + len(rest.activities) == 12 and not rest.next_page_token


@pytest.mark.parametrize("tool", ["store_red_packet", "task_reward"])
async def test_M13_retired_tools_are_refused_with_that_reason(stub: Stub, clock: ManualClock, tool: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateActivity(activity(S, G, clock.now(), **{tool: pb.RetiredToolSpec()}))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rules_of(refused.value) == ["M13"] and reasons_of(refused.value) == ["TOOL_RETIRED"]
    assert list((await stub.ListActivities(pb.ListActivitiesRequest(store_id=S))).activities) == []


async def test_M13_voting_and_check_in_are_member_activities(stub: Stub, clock: ManualClock) -> None:
    now = clock.now()
    vote = (
        await stub.CreateActivity(
            activity(S, G, now, minutes=3 * 24 * 60, voting=pb.VotingSpec(options=["A", "B", "C"]))
        )
    ).activity
    daily = (await stub.CreateActivity(activity(S, G, now, minutes=3 * 24 * 60, check_in=pb.CheckInSpec()))).activity
    for consumer, option in (("c1", 1), ("c2", 1), ("c3", 2)):
        tally = await stub.Vote(
            pb.VoteRequest(
                store_id=S, activity_id=vote.activity_id, consumer_id=consumer, option_index=option, group_member=True
            )
        )
    assert list(tally.tally) == [0, 2, 1]
    again = await stub.Vote(
        pb.VoteRequest(store_id=S, activity_id=vote.activity_id, consumer_id="c1", option_index=1, group_member=True)
    )
    assert list(again.tally) == [0, 2, 1]
    with pytest.raises(grpc.aio.AioRpcError) as changed:
        await stub.Vote(
            pb.VoteRequest(
                store_id=S, activity_id=vote.activity_id, consumer_id="c1", option_index=0, group_member=True
            )
        )
    assert reasons_of(changed.value) == ["ALREADY_VOTED"]
    with pytest.raises(grpc.aio.AioRpcError) as outsider:
        await stub.Vote(pb.VoteRequest(store_id=S, activity_id=vote.activity_id, consumer_id="c9", option_index=0))
    assert rules_of(outsider.value) == ["M13"]

    def check(consumer: str) -> pb.CheckInRequest:
        return pb.CheckInRequest(store_id=S, activity_id=daily.activity_id, consumer_id=consumer, group_member=True)

    first = await stub.CheckIn(check("c1"))
    same_day = await stub.CheckIn(check("c1"))
    clock.advance(timedelta(days=1))
    next_day = await stub.CheckIn(check("c1"))
    assert (first.days_checked_in, same_day.replayed, next_day.days_checked_in) == (1, True, 2)
    assert next_day.day != first.day

    # D1: the day turns at midnight in China (16:00 UTC), not at midnight UTC.
    midnight = clock.now().replace(hour=16, minute=0, second=0, microsecond=0)
    if midnight <= clock.now():
        midnight += timedelta(days=1)
    clock.set(midnight - timedelta(seconds=1))
    before = await stub.CheckIn(check("c2"))
    clock.set(midnight + timedelta(hours=7, minutes=59))  # still the same UTC day as midnight
    after = await stub.CheckIn(check("c2"))
    assert (before.days_checked_in, after.days_checked_in, after.replayed) == (1, 2, False)
    assert (before.day, after.day) == (midnight.date().isoformat(), (midnight + timedelta(days=1)).date().isoformat())


# -- M12: the trumpet -------------------------------------------------------------------------


async def test_M12_the_trumpet_needs_l3_a_sub_group_and_a_start_one_minute_after_the_activity(
    stub: Stub, clock: ManualClock
) -> None:
    now = clock.now()
    target = (await stub.CreateActivity(activity(S, G, now, check_in=pb.CheckInSpec()))).activity

    def trumpet(level: int, on_sub_group: bool, after: timedelta, request_id: str = "") -> pb.CreateTrumpetRequest:
        return pb.CreateTrumpetRequest(
            request_id=request_id,
            store_id=S,
            activity_id=target.activity_id,
            sub_group_id="sg_1",
            on_sub_group=on_sub_group,
            group_level=level,
            display_starts_at=ts(now + after),
            message="今晚8点开抢",
            created_by="main-1",
        )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateTrumpet(trumpet(2, False, timedelta(seconds=30)))
    assert rules_of(refused.value) == ["M12", "M12", "M12"]
    assert reasons_of(refused.value) == ["GROUP_LEVEL_TOO_LOW", "TRUMPET_ON_SUB_GROUP", "TRUMPET_TOO_EARLY"]
    with pytest.raises(grpc.aio.AioRpcError) as early:
        await stub.CreateTrumpet(trumpet(4, True, timedelta(seconds=59)))
    assert reasons_of(early.value) == ["TRUMPET_TOO_EARLY"]
    made = await stub.CreateTrumpet(trumpet(3, True, timedelta(minutes=1), "t1"))
    again = await stub.CreateTrumpet(trumpet(3, True, timedelta(minutes=1), "t1"))
    assert made.trumpet.trumpet_id == again.trumpet.trumpet_id and made.trumpet.group_set_id == G
    # The trumpet is no activity of its own (M11 counts the activities it announces).
    listed = await stub.ListActivities(pb.ListActivitiesRequest(store_id=S))
    assert len(listed.activities) == 1


# -- request ids, bad input -------------------------------------------------------------------


async def test_a_retried_request_changes_nothing_the_second_time(stub: Stub, clock: ManualClock) -> None:
    await item(stub, S, "i1", stock=5)
    first = await buy(stub, S, "i1", "c1", "same", 2)
    second = await buy(stub, S, "i1", "c1", "same", 2)
    assert second.replayed and second.purchase == first.purchase and second.stock_left == 3
    await refused_as_reused(buy(stub, S, "i1", "c2", "same", 1), "same")
    await refused_as_reused(buy(stub, S, "i1", "c1", "same", 1), "same")  # the same buyer, another quantity
    a = await stub.CreateActivity(activity(S, G, clock.now(), request_id="act-1", check_in=pb.CheckInSpec()))
    b = await stub.CreateActivity(activity(S, G, clock.now(), request_id="act-1", check_in=pb.CheckInSpec()))
    assert a.activity == b.activity
    await refused_as_reused(
        stub.CreateActivity(activity(S, G, clock.now(), request_id="act-1", title="另一个", check_in=pb.CheckInSpec())),
        "act-1",
    )
    assert len((await stub.ListActivities(pb.ListActivitiesRequest(store_id=S))).activities) == 1
    assert await stock(stub, S, "i1") == 3
    assert len((await stub.ListSales(pb.ListSalesRequest(store_id=S))).purchases) == 1


async def test_a_reused_request_id_with_another_request_is_already_exists_everywhere(
    stub: Stub, clock: ManualClock
) -> None:
    """The request_id rule (services.common.request_ids): restocks, claims and trumpets like purchases."""
    now = clock.now()
    await item(stub, S, "i1", stock=5)
    await item(stub, S, "i2", stock=5)
    restock = pb.RestockRequest(request_id="rs", store_id=S, item_id="i1", quantity=2)
    assert not (await stub.Restock(restock)).replayed and (await stub.Restock(restock)).replayed
    await refused_as_reused(
        stub.Restock(pb.RestockRequest(request_id="rs", store_id=S, item_id="i2", quantity=2)), "rs"
    )
    await refused_as_reused(
        stub.Restock(pb.RestockRequest(request_id="rs", store_id=S, item_id="i1", quantity=3)), "rs"
    )
    assert (await stock(stub, S, "i1"), await stock(stub, S, "i2")) == (7, 5)

    packets = await fountain(stub, S, G, now, pool(CASH, 100, 5, 5, now + timedelta(days=1)))
    first = await claim(stub, S, packets.activity_id, "c1", "cl")
    assert await claim(stub, S, packets.activity_id, "c1", "cl") == first
    await refused_as_reused(claim(stub, S, packets.activity_id, "c2", "cl"), "cl")

    def trumpet(message: str) -> pb.CreateTrumpetRequest:
        return pb.CreateTrumpetRequest(
            request_id="tr",
            store_id=S,
            activity_id=packets.activity_id,
            sub_group_id="sg_1",
            on_sub_group=True,
            group_level=3,
            display_starts_at=ts(now + timedelta(minutes=5)),
            message=message,
            created_by="main-1",
        )

    made = await stub.CreateTrumpet(trumpet("今晚8点开抢"))
    assert (await stub.CreateTrumpet(trumpet("今晚8点开抢"))).trumpet == made.trumpet
    await refused_as_reused(stub.CreateTrumpet(trumpet("明晚8点开抢")), "tr")


async def test_bad_input_is_refused_with_the_field_and_changes_nothing(stub: Stub, clock: ManualClock) -> None:
    now = clock.now()
    await item(stub, S, "i1", stock=5)
    sale = await flash_sale(stub, S, G, "i1", now)
    bad_orders = [
        (pb.Order(item_id="i1", quantity=0), "order.quantity"),
        (pb.Order(item_id="i1", quantity=-3), "order.quantity"),
        (pb.Order(item_id="", quantity=1), "order.item_id"),
        (pb.Order(item_id="i1", quantity=1, cash_red_packet_ids=["x", "x"]), "order.cash_red_packet_ids[1]"),
        (
            pb.Order(item_id="i1", quantity=1, cash_red_packet_ids=[f"c{i}" for i in range(101)]),
            "order.cash_red_packet_ids",
        ),
        (pb.Order(item_id="i1", quantity=1, store_red_packet_fen=[100]), "order.store_red_packet_fen"),
    ]
    for order, field in bad_orders:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Purchase(pb.PurchaseRequest(request_id="r", store_id=S, consumer_id="c1", order=order))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, order
        assert field in fields_of(refused.value), (field, fields_of(refused.value))
    with pytest.raises(grpc.aio.AioRpcError) as no_request_id:
        await stub.Purchase(pb.PurchaseRequest(store_id=S, consumer_id="c1", order=pb.Order(item_id="i1", quantity=1)))
    assert "request_id" in fields_of(no_request_id.value)

    bad_creates = [
        (
            activity(S, G, now, flash_sale=pb.FlashSaleSpec(item_id="i1", flash_price_fen=0)),
            "flash_sale.flash_price_fen",
        ),
        (
            activity(S, G, now, flash_sale=pb.FlashSaleSpec(item_id="i1", flash_price_fen=-1)),
            "flash_sale.flash_price_fen",
        ),
        (activity(S, G, now, minutes=-5, check_in=pb.CheckInSpec()), "ends_at"),
        (activity(S, G, now), "spec"),
        (activity(S, G, now, voting=pb.VotingSpec(options=["only one"])), "voting.options"),
        (
            activity(
                S, G, now, red_packet_fountain=pb.FountainSpec(pools=[pool(CASH, 0, 5, 1, now + timedelta(days=1))])
            ),
            "red_packet_fountain.pools[0].value_fen",
        ),
    ]
    for request, field in bad_creates:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateActivity(request)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in fields_of(refused.value), (field, fields_of(refused.value))
    with pytest.raises(grpc.aio.AioRpcError) as bad_price:
        await item(stub, S, "i2", price=0)
    assert "price_min_fen" in fields_of(bad_price.value)

    for call in (
        stub.Purchase(
            pb.PurchaseRequest(request_id="r", store_id=S, consumer_id="c1", order=pb.Order(item_id="nope", quantity=1))
        ),
        stub.GetActivity(pb.GetActivityRequest(store_id=S, activity_id="act_missing")),
        stub.CreateActivity(activity(S, G, now, flash_sale=pb.FlashSaleSpec(item_id="nope", flash_price_fen=1))),
        stub.Restock(pb.RestockRequest(request_id="x", store_id=S, item_id="nope", quantity=1)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert await stock(stub, S, "i1") == 5
    assert [a.activity_id for a in (await stub.ListActivities(pb.ListActivitiesRequest(store_id=S))).activities] == [
        sale.activity_id
    ]
    assert list((await stub.ListSales(pb.ListSalesRequest(store_id=S))).purchases) == []


# -- M2: stock taken and purchase recorded are one transaction --------------------------------


async def test_M2_a_failure_after_the_stock_was_taken_leaves_the_stock_untouched(
    stub: Stub, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await item(stub, S, "i1", stock=5)
    taken: list[int] = []
    original_take = OrderRepository._take_stock

    async def take_then_record(self: OrderRepository, *args: object) -> int:
        left = await original_take(self, *args)  # type: ignore[arg-type]
        taken.append(left)
        return left

    async def crash(self: OrderRepository, *args: object) -> None:
        raise RuntimeError("the process died between taking the stock and recording the purchase")

    monkeypatch.setattr(OrderRepository, "_take_stock", take_then_record)
    monkeypatch.setattr(OrderRepository, "_record_purchase", crash)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await buy(stub, S, "i1", "c1", "r1", 2)
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert taken == [3]  # the stock update did run inside the transaction …
    monkeypatch.undo()
    assert await stock(stub, S, "i1") == 5  # … and rolled back with it
    assert list((await stub.ListSales(pb.ListSalesRequest(store_id=S))).purchases) == []


async def test_M2_a_racing_retry_that_loses_the_request_id_key_gives_its_stock_back(
    stub: Stub, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await item(stub, S, "i1", stock=5)
    first = await buy(stub, S, "i1", "c1", "r1", 2)

    # As if a concurrent retry had read before the first committed: its read shows "r1" unused,
    # it takes the stock, and the unique (store_id, request_id) fails its purchase insert.
    reads: list[bool] = []
    original = OrderRepository._order_row

    async def stale_read(self: OrderRepository, params: dict[str, object], *, buying: bool):  # type: ignore[no-untyped-def]
        row = await original(self, params, buying=buying)
        reads.append(row.request_used)
        return SimpleNamespace(**{**row._asdict(), "request_used": False}) if len(reads) == 1 else row

    monkeypatch.setattr(OrderRepository, "_order_row", stale_read)
    retried = await buy(stub, S, "i1", "c1", "r1", 2)
    assert reads == [True, True]  # the first attempt collided and rolled back; the second replayed
    assert retried.replayed and retried.purchase == first.purchase
    assert await stock(stub, S, "i1") == 3
    assert len((await stub.ListSales(pb.ListSalesRequest(store_id=S))).purchases) == 1


async def test_metrics_count_purchases_sold_out_and_claims_by_outcome(stub: Stub, clock: ManualClock) -> None:
    before = {
        "purchased": metric("qun_campaigns_purchases_total", sale="flash", outcome="purchased", rule=""),
        "refused": metric("qun_campaigns_purchases_total", sale="flash", outcome="refused", rule="M2"),
        "sold_out": metric("qun_campaigns_sold_out_total", sale="flash"),
    }
    await item(stub, S, "i1", stock=1)
    sale = await flash_sale(stub, S, G, "i1", clock.now())
    await buy(stub, S, "i1", "c1", "r1", flash_sale_id=sale.activity_id)
    assert metric("qun_campaigns_flash_sale_stock_left", store_id=S, activity_id=sale.activity_id) == 0
    with pytest.raises(grpc.aio.AioRpcError):
        await buy(stub, S, "i1", "c2", "r2", flash_sale_id=sale.activity_id)
    assert (
        metric("qun_campaigns_purchases_total", sale="flash", outcome="purchased", rule="") == before["purchased"] + 1
    )
    assert metric("qun_campaigns_purchases_total", sale="flash", outcome="refused", rule="M2") == before["refused"] + 1
    assert metric("qun_campaigns_sold_out_total", sale="flash") == before["sold_out"] + 1
    await stub.EndActivity(pb.EndActivityRequest(store_id=S, activity_id=sale.activity_id))
    assert (
        REGISTRY.get_sample_value(
            "qun_campaigns_flash_sale_stock_left", {"store_id": S, "activity_id": sale.activity_id}
        )
        is None
    )
