"""The marketing tools inside groups through the gateway, every service a real process (SPEC M1–M13).

Each test names the SPEC rules it pins down and fails when one breaks; the
gateway composes the groups service (membership M5, owner and admins, the
sub-groups and the level M12) with the campaigns service. Time rules move the
clock of every process (``platform.set_time``) and put it back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.auth import Principal, Role
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import campaigns_pb2 as pb
from qun.gateway.v1 import campaigns_pb2_grpc, gateway_pb2, operations_pb2, operations_pb2_grpc
from services.common.errors import failures_from_status, field_violations, status_from_error
from services.common.rules import load_rules
from services.common.timestamps import to_timestamp as ts
from services.common.validation import MAX_INT64
from tests.flows.test_create_and_join import join, new_group, new_store, rules_of
from tests.support import facts
from tests.support.stack import GatewayClient, RunningStack, unique

UPSTREAM = Principal("upstream-items", Role.UPSTREAM)
OPS = Principal("ops-1", Role.OPS)
CASH = pb.PRIZE_KIND_CASH_RED_PACKET
COUPON = pb.PRIZE_KIND_STORE_COUPON
BOUNDS = load_rules(env={}).bounds  # the stack runs on the default rules file

Metadata = tuple[tuple[str, str], ...]


def reasons_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [f.reason for f in failures_from_status(status_from_error(error))]


@dataclass
class Shop:
    """A store with a group-set, its main account, and the campaigns API."""

    gw: GatewayClient
    platform: RunningStack
    store_id: str
    main_id: str
    group: gateway_pb2.GroupSet

    @property
    def api(self) -> campaigns_pb2_grpc.CampaignServiceStub:
        return campaigns_pb2_grpc.CampaignServiceStub(self.gw.channel)

    @property
    def owner(self) -> Metadata:
        return self.gw.auth(self.gw.main_account(self.main_id, self.store_id))

    def consumer(self, consumer_id: str) -> Metadata:
        return self.gw.auth(self.gw.consumer(consumer_id))

    async def member(self) -> str:
        consumer = unique("c")
        await self.gw.report(facts.consumer(consumer, follows=(self.store_id,)))
        await join(self.gw, consumer, self.group.group_set_id)
        return consumer

    async def outsider(self) -> str:
        consumer = unique("c")
        await self.gw.report(facts.consumer(consumer, follows=(self.store_id,)))
        return consumer

    async def item(
        self,
        *,
        stock: int,
        price: int = 10_000,
        high: int = 0,
        skus: int = 1,
        platform: int = facts_pb2.PLATFORM_TAOBAO,
    ) -> str:
        item_id = unique("i")
        await self.api.ReportItem(
            pb.ReportItemRequest(
                store_id=self.store_id,
                item_id=item_id,
                platform=platform,
                sku_count=skus,
                price_min_fen=price,
                price_max_fen=high or price,
                initial_stock=stock,
            ),
            metadata=self.gw.auth(UPSTREAM),
        )
        return item_id

    def window(self, minutes: int = 60, start: timedelta = timedelta(0)) -> dict[str, Timestamp]:
        now = self.platform.now
        return {"starts_at": ts(now + start), "ends_at": ts(now + start + timedelta(minutes=minutes))}

    async def create(
        self, metadata: Metadata | None = None, minutes: int = 60, start: timedelta = timedelta(0), **spec: object
    ) -> pb.Activity:
        reply = await self.api.CreateActivity(
            pb.CreateActivityRequest(
                group_set_id=self.group.group_set_id,
                title="群活动",
                **self.window(minutes, start),
                **spec,  # type: ignore[arg-type]
            ),
            metadata=metadata or self.owner,
        )
        return reply.activity

    async def flash_sale(self, item_id: str, price: int = 6_000, minutes: int = 60) -> pb.Activity:
        return await self.create(minutes=minutes, flash_sale=pb.FlashSaleSpec(item_id=item_id, flash_price_fen=price))

    async def buy(
        self, consumer: str, item_id: str, quantity: int = 1, flash_sale_id: str = "", **order: object
    ) -> pb.PurchaseResponse:
        return await self.api.Purchase(
            pb.PurchaseRequest(
                request_id=unique("buy"),
                store_id=self.store_id,
                order=pb.Order(item_id=item_id, quantity=quantity, flash_sale_id=flash_sale_id, **order),  # type: ignore[arg-type]
            ),
            metadata=self.consumer(consumer),
        )

    async def stock(self, item_id: str) -> int:
        reply = await self.api.GetItem(
            pb.GetItemRequest(store_id=self.store_id, item_id=item_id), metadata=self.gw.auth(UPSTREAM)
        )
        return reply.item.stock

    async def claim(self, consumer: str, activity_id: str, pool_id: str = "") -> pb.Claim:
        reply = await self.api.ClaimPrize(
            pb.ClaimPrizeRequest(
                request_id=unique("claim"), store_id=self.store_id, activity_id=activity_id, pool_id=pool_id
            ),
            metadata=self.consumer(consumer),
        )
        return reply.claim


@pytest.fixture
async def shop(gw: GatewayClient, platform: RunningStack) -> Shop:
    store_id, main_id = await new_store(gw, platform)
    return Shop(gw, platform, store_id, main_id, await new_group(gw, store_id, main_id))


async def at(platform: RunningStack, when: datetime) -> None:
    platform.set_time(when)
    await asyncio.sleep(0)


# -- flash sale (M1–M6) ------------------------------------------------------------------------


async def test_M2_M5_the_flash_sale_sells_the_items_one_stock_to_members_only(shop: Shop) -> None:
    item_id = await shop.item(stock=3)
    sale = await shop.flash_sale(item_id)
    assert sale.members_only and sale.running  # 群专享
    member, outsider = await shop.member(), await shop.outsider()

    with pytest.raises(grpc.aio.AioRpcError) as not_member:
        await shop.buy(outsider, item_id, 1, sale.activity_id)
    assert not_member.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rules_of(not_member.value) == ["M5"]
    assert await shop.stock(item_id) == 3  # nothing changed

    normal = await shop.buy(outsider, item_id, 1)  # the item price is for everyone
    assert normal.purchase.price.unit_price_fen == 10_000 and normal.stock_left == 2
    flash = await shop.buy(member, item_id, 2, sale.activity_id)
    assert flash.purchase.price.unit_price_fen == 6_000 and flash.stock_left == 0  # M2: one stock
    with pytest.raises(grpc.aio.AioRpcError) as sold_out:
        await shop.buy(member, item_id, 1, sale.activity_id)
    assert rules_of(sold_out.value) == ["M2"] and reasons_of(sold_out.value) == ["SOLD_OUT"]

    restocked = await shop.api.Restock(
        pb.RestockRequest(request_id=unique("rs"), store_id=shop.store_id, item_id=item_id, quantity=2),
        metadata=shop.owner,
    )
    assert restocked.item.stock == 2
    cancelled = await shop.api.CancelPurchase(
        pb.CancelPurchaseRequest(
            request_id=unique("x"), store_id=shop.store_id, purchase_id=flash.purchase.purchase_id
        ),
        metadata=shop.gw.auth(UPSTREAM),
    )
    assert cancelled.stock == 4


async def test_M1_multi_sku_and_price_range_items_cannot_be_flash_sold(shop: Shop) -> None:
    multi = await shop.item(stock=10, skus=4)
    ranged = await shop.item(stock=10, price=1_000, high=2_000)
    for item_id, reason in ((multi, "MULTI_SKU_ITEM"), (ranged, "PRICE_RANGE_ITEM")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await shop.flash_sale(item_id, price=500)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert rules_of(refused.value) == ["M1"] and reasons_of(refused.value) == [reason]
    listed = await shop.api.ListActivities(
        pb.ListActivitiesRequest(store_id=shop.store_id, group_set_id=shop.group.group_set_id), metadata=shop.owner
    )
    assert list(listed.activities) == []


async def test_M3_upstream_price_history_reads_the_records_each_sale_counts_toward(shop: Shop) -> None:
    item_id = await shop.item(stock=5, platform=facts_pb2.PLATFORM_TMALL)
    sale = await shop.flash_sale(item_id)
    member = await shop.member()
    bought = await shop.buy(member, item_id, 1, sale.activity_id)
    sales = await shop.api.ListSales(
        pb.ListSalesRequest(store_id=shop.store_id, flash_sale_id=sale.activity_id), metadata=shop.gw.auth(UPSTREAM)
    )
    assert [p.purchase_id for p in sales.purchases] == [bought.purchase.purchase_id]
    assert {r.record: r.counts for r in sales.purchases[0].price_records} == {
        pb.LOWEST_PRICE_RECORD_HISTORICAL: False,  # Tmall: not the historical lowest …
        pb.LOWEST_PRICE_RECORD_PROMOTIONAL_30_DAY: True,  # … but the 30-day lowest promotional price
        pb.LOWEST_PRICE_RECORD_JUHUASUAN: True,
        pb.LOWEST_PRICE_RECORD_TAOQIANGGOU: True,
    }
    with pytest.raises(grpc.aio.AioRpcError) as consumer:
        await shop.api.ListSales(pb.ListSalesRequest(store_id=shop.store_id), metadata=shop.consumer(member))
    assert consumer.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_M4_M8_an_order_stacks_up_to_ten_cash_red_packets_and_one_coupon_with_the_flash_price(
    shop: Shop,
) -> None:
    now = shop.platform.now
    item_id = await shop.item(stock=5)
    sale = await shop.flash_sale(item_id)
    prizes = await shop.create(
        red_packet_fountain=pb.FountainSpec(
            pools=[
                pb.PoolSpec(
                    kind=CASH, value_fen=100, count=20, per_user_limit=11, expires_at=ts(now + timedelta(days=7))
                ),
                pb.PoolSpec(
                    kind=COUPON, value_fen=500, count=5, per_user_limit=2, expires_at=ts(now + timedelta(days=7))
                ),
            ]
        )
    )
    cash_pool, coupon_pool = prizes.pools
    member = await shop.member()
    cash = [(await shop.claim(member, prizes.activity_id, cash_pool.pool_id)).claim_id for _ in range(11)]
    coupons = [(await shop.claim(member, prizes.activity_id, coupon_pool.pool_id)).claim_id for _ in range(2)]

    def order(n_cash: int, n_coupons: int, **extra: object) -> pb.Order:
        return pb.Order(
            item_id=item_id,
            quantity=2,
            flash_sale_id=sale.activity_id,
            cash_red_packet_ids=cash[:n_cash],
            store_coupon_ids=coupons[:n_coupons],
            **extra,  # type: ignore[arg-type]
        )

    priced = await shop.api.PriceOrder(
        pb.PriceOrderRequest(store_id=shop.store_id, order=order(10, 1, store_red_packet_fen=[300])),
        metadata=shop.consumer(member),
    )
    assert priced.price.flash_price and priced.price.subtotal_fen == 12_000
    assert priced.price.total_fen == 12_000 - 10 * 100 - 500 - 300  # M4: all of them stack

    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await shop.api.PriceOrder(
            pb.PriceOrderRequest(store_id=shop.store_id, order=order(11, 2)), metadata=shop.consumer(member)
        )
    assert too_many.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reasons_of(too_many.value) == ["TOO_MANY_CASH_RED_PACKETS", "TOO_MANY_STORE_COUPONS"]
    with pytest.raises(grpc.aio.AioRpcError) as eleven:
        await shop.api.Purchase(
            pb.PurchaseRequest(request_id=unique("b"), store_id=shop.store_id, order=order(11, 0)),
            metadata=shop.consumer(member),
        )
    assert rules_of(eleven.value) == ["M8"]
    assert await shop.stock(item_id) == 5  # nothing changed

    bought = await shop.buy(
        member, item_id, 2, sale.activity_id, cash_red_packet_ids=cash[:10], store_coupon_ids=coupons[:1]
    )
    assert bought.purchase.price.total_fen == 12_000 - 1_000 - 500 and bought.stock_left == 3
    wallet = await shop.api.ListMyWallet(pb.ListMyWalletRequest(store_id=shop.store_id), metadata=shop.consumer(member))
    used = [c for c in wallet.claims if c.state == pb.CLAIM_STATE_USED]
    assert len(used) == 11 and wallet.held == 2


async def test_M6_the_end_card_reaches_the_group_and_the_merchant_reads_the_results(shop: Shop) -> None:
    start = shop.platform.now
    item_id = await shop.item(stock=10)
    sale = await shop.flash_sale(item_id, minutes=30)
    member, other = await shop.member(), await shop.member()
    await shop.buy(member, item_id, 3, sale.activity_id)
    await shop.buy(other, item_id, 2, sale.activity_id)

    watch = shop.api.WatchEndCards(
        pb.WatchEndCardsRequest(store_id=shop.store_id, group_set_id=shop.group.group_set_id),
        metadata=shop.consumer(member),
        timeout=30,
    )
    try:
        await at(shop.platform, start + timedelta(minutes=31))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await shop.buy(member, item_id, 1, sale.activity_id)
        assert rules_of(ended.value) == ["M6"]
        await shop.api.RunExpiry(pb.RunExpiryRequest(), metadata=shop.gw.auth(OPS))
        streamed = await asyncio.wait_for(watch.read(), 10)
        assert (streamed.end_card.activity_id, streamed.end_card.units_sold) == (sale.activity_id, 5)
    finally:
        watch.cancel()
        await at(shop.platform, start)
    cards = await shop.api.ListEndCards(
        pb.ListEndCardsRequest(store_id=shop.store_id, group_set_id=shop.group.group_set_id),
        metadata=shop.consumer(other),
    )
    assert [(c.units_sold, c.purchases) for c in cards.end_cards] == [(5, 2)]
    results = await shop.api.GetFlashSaleResults(
        pb.GetFlashSaleResultsRequest(store_id=shop.store_id, activity_id=sale.activity_id), metadata=shop.owner
    )
    assert (results.units_sold, results.buyers, results.stock_left) == (5, 2, 5)
    assert results.end_card.seq == streamed.end_card.seq
    outsider = await shop.outsider()
    with pytest.raises(grpc.aio.AioRpcError) as not_member:
        await shop.api.ListEndCards(
            pb.ListEndCardsRequest(store_id=shop.store_id, group_set_id=shop.group.group_set_id),
            metadata=shop.consumer(outsider),
        )
    assert not_member.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as consumer_reads_results:
        await shop.api.GetFlashSaleResults(
            pb.GetFlashSaleResultsRequest(store_id=shop.store_id, activity_id=sale.activity_id),
            metadata=shop.consumer(member),
        )
    assert consumer_reads_results.value.code() is grpc.StatusCode.PERMISSION_DENIED


# -- red-packet fountain (M7–M10) ------------------------------------------------------------


async def test_M7_M10_members_claim_cash_and_coupons_up_to_the_per_user_limit(shop: Shop) -> None:
    now = shop.platform.now
    prizes = await shop.create(
        red_packet_fountain=pb.FountainSpec(
            pools=[
                pb.PoolSpec(
                    kind=CASH, value_fen=88, count=10, per_user_limit=2, expires_at=ts(now + timedelta(days=1))
                ),
                pb.PoolSpec(
                    kind=COUPON, value_fen=500, count=10, per_user_limit=1, expires_at=ts(now + timedelta(days=1))
                ),
            ]
        )
    )
    member, outsider = await shop.member(), await shop.outsider()
    kinds = sorted([(await shop.claim(member, prizes.activity_id)).kind for _ in range(3)])
    assert kinds == [CASH, CASH, COUPON]  # M7: cash red packets and store coupons
    with pytest.raises(grpc.aio.AioRpcError) as limit:
        await shop.claim(member, prizes.activity_id)
    assert rules_of(limit.value) == ["M10"] and reasons_of(limit.value) == ["CLAIM_LIMIT_REACHED"]
    with pytest.raises(grpc.aio.AioRpcError) as not_member:
        await shop.claim(outsider, prizes.activity_id)
    assert reasons_of(not_member.value) == ["NOT_GROUP_MEMBER"]
    wallet = await shop.api.ListMyWallet(pb.ListMyWalletRequest(store_id=shop.store_id), metadata=shop.consumer(member))
    assert wallet.held == 3 and wallet.wallet_size == 100


async def test_M9_unused_cash_red_packets_go_back_to_the_merchant_as_refunds(shop: Shop) -> None:
    start = shop.platform.now
    item_id = await shop.item(stock=5)
    prizes = await shop.create(
        minutes=60,
        red_packet_fountain=pb.FountainSpec(
            pools=[
                pb.PoolSpec(
                    kind=CASH, value_fen=200, count=5, per_user_limit=2, expires_at=ts(start + timedelta(days=1))
                )
            ]
        ),
    )
    member = await shop.member()
    used, kept = [await shop.claim(member, prizes.activity_id) for _ in range(2)]
    await shop.buy(member, item_id, 1, cash_red_packet_ids=[used.claim_id])
    ops = shop.gw.auth(OPS)
    try:
        await at(shop.platform, start + timedelta(days=1, minutes=1))
        await shop.api.RunExpiry(pb.RunExpiryRequest(), metadata=ops)
        await shop.api.RunExpiry(pb.RunExpiryRequest(), metadata=ops)  # idempotent
    finally:
        await at(shop.platform, start)
    ledger = await shop.api.ListRefunds(pb.ListRefundsRequest(store_id=shop.store_id), metadata=shop.owner)
    assert sorted((r.source, r.amount_fen) for r in ledger.refunds) == [
        (pb.REFUND_SOURCE_EXPIRED_RED_PACKET, 200),  # the packet nobody used
        (pb.REFUND_SOURCE_UNCLAIMED_POOL, 3 * 200),  # the packets nobody claimed
    ]
    assert ledger.total_fen == 800
    assert {r.source_id for r in ledger.refunds} >= {kept.claim_id}
    with pytest.raises(grpc.aio.AioRpcError) as not_ops:
        await shop.api.RunExpiry(pb.RunExpiryRequest(), metadata=shop.owner)
    assert not_ops.value.code() is grpc.StatusCode.PERMISSION_DENIED


# -- group buy, trumpet, voting, check-in (M11–M13) ------------------------------------------


async def test_M11_M13_a_group_runs_ten_activities_at_once_of_every_kind(shop: Shop) -> None:
    item_id = await shop.item(stock=5)
    expires = ts(shop.platform.now + timedelta(days=1))
    specs: list[dict[str, object]] = [
        {"flash_sale": pb.FlashSaleSpec(item_id=item_id, flash_price_fen=5_000)},
        {"group_buy": pb.GroupBuySpec(item_id=item_id, group_price_fen=8_000, group_size=2)},
        {"voting": pb.VotingSpec(options=["A", "B"])},
        {"check_in": pb.CheckInSpec()},
        {
            "red_packet_fountain": pb.FountainSpec(
                pools=[pb.PoolSpec(kind=CASH, value_fen=1, count=1, per_user_limit=1, expires_at=expires)]
            )
        },
    ]
    running = [await shop.create(**specs[i % len(specs)]) for i in range(10)]
    with pytest.raises(grpc.aio.AioRpcError) as eleventh:
        await shop.create(check_in=pb.CheckInSpec())
    assert eleventh.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rules_of(eleventh.value) == ["M11"]
    # "At once": after these ten end there is room, and ending one early frees its place now.
    assert await shop.create(start=timedelta(minutes=60), check_in=pb.CheckInSpec())
    await shop.api.EndActivity(
        pb.EndActivityRequest(store_id=shop.store_id, activity_id=running[3].activity_id), metadata=shop.owner
    )
    assert await shop.create(check_in=pb.CheckInSpec())


async def test_M12_the_trumpet_is_the_main_accounts_on_a_sub_group_of_an_l3_store(shop: Shop) -> None:
    sub = unique("sub")
    await shop.gw.report(facts.store(shop.store_id, shop.main_id, shop.platform.now, sub_accounts=(sub,)))
    await shop.gw.groups.AddAdmin(
        gateway_pb2.AddAdminRequest(group_set_id=shop.group.group_set_id, account_id=sub), metadata=shop.owner
    )
    target = await shop.create(check_in=pb.CheckInSpec())
    starts = shop.platform.now
    sub_group = shop.group.sub_groups[0].sub_group_id

    def trumpet(group_id: str, after: timedelta) -> pb.CreateTrumpetRequest:
        return pb.CreateTrumpetRequest(
            activity_id=target.activity_id, group_id=group_id, display_starts_at=ts(starts + after), message="快来签到"
        )

    with pytest.raises(grpc.aio.AioRpcError) as admin:
        await shop.api.CreateTrumpet(
            trumpet(sub_group, timedelta(minutes=1)),
            metadata=shop.gw.auth(Principal(sub, Role.STORE_SUB, shop.store_id)),
        )
    assert admin.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as low:
        await shop.api.CreateTrumpet(trumpet(sub_group, timedelta(minutes=1)), metadata=shop.owner)
    assert reasons_of(low.value) == ["GROUP_LEVEL_TOO_LOW"]

    month = f"{starts.year:04d}-{starts.month:02d}"
    await shop.gw.groups.SetGroupLevel(
        gateway_pb2.SetGroupLevelRequest(store_id=shop.store_id, month=month, level=3), metadata=shop.gw.auth(OPS)
    )
    with pytest.raises(grpc.aio.AioRpcError) as on_set:
        await shop.api.CreateTrumpet(trumpet(shop.group.group_set_id, timedelta(minutes=1)), metadata=shop.owner)
    assert reasons_of(on_set.value) == ["TRUMPET_ON_SUB_GROUP"]
    with pytest.raises(grpc.aio.AioRpcError) as early:
        await shop.api.CreateTrumpet(trumpet(sub_group, timedelta(seconds=59)), metadata=shop.owner)
    assert early.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rules_of(early.value) == ["M12"] and reasons_of(early.value) == ["TRUMPET_TOO_EARLY"]
    made = await shop.api.CreateTrumpet(trumpet(sub_group, timedelta(minutes=1)), metadata=shop.owner)
    assert made.trumpet.sub_group_id == sub_group and made.trumpet.group_set_id == shop.group.group_set_id


async def test_M12_an_activity_in_the_last_minute_of_9999_is_refused_a_trumpet_not_an_internal_error(
    shop: Shop,
) -> None:
    """The earliest display time (start + 1 minute) lies past the last time a timestamp holds."""
    month = f"{shop.platform.now.year:04d}-{shop.platform.now.month:02d}"
    await shop.gw.groups.SetGroupLevel(
        gateway_pb2.SetGroupLevelRequest(store_id=shop.store_id, month=month, level=3), metadata=shop.gw.auth(OPS)
    )
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=shop.platform.now.tzinfo)
    late = await shop.api.CreateActivity(
        pb.CreateActivityRequest(
            group_set_id=shop.group.group_set_id,
            title="最后一分钟",
            starts_at=ts(last - timedelta(seconds=30)),
            ends_at=ts(last),
            check_in=pb.CheckInSpec(),
        ),
        metadata=shop.owner,
    )
    with pytest.raises(grpc.aio.AioRpcError) as early:
        await shop.api.CreateTrumpet(
            pb.CreateTrumpetRequest(
                activity_id=late.activity.activity_id,
                group_id=shop.group.sub_groups[0].sub_group_id,
                display_starts_at=ts(last - timedelta(seconds=1)),
                message="快来签到",
            ),
            metadata=shop.owner,
        )
    assert early.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    [failure] = failures_from_status(status_from_error(early.value))
    assert (failure.reason, failure.figures["earliest"]) == ("TRUMPET_TOO_EARLY", "after 9999-12-31T23:59:59")


@pytest.mark.parametrize("tool", ["store_red_packet", "task_reward"])
async def test_M13_retired_tools_are_refused_with_that_reason(shop: Shop, tool: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await shop.create(**{tool: pb.RetiredToolSpec()})
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rules_of(refused.value) == ["M13"] and reasons_of(refused.value) == ["TOOL_RETIRED"]


async def test_M13_voting_and_check_in_for_members_and_admins_run_activities(shop: Shop) -> None:
    sub = unique("sub")
    await shop.gw.report(facts.store(shop.store_id, shop.main_id, shop.platform.now, sub_accounts=(sub,)))
    admin = shop.gw.auth(Principal(sub, Role.STORE_SUB, shop.store_id))
    with pytest.raises(grpc.aio.AioRpcError) as not_yet:
        await shop.create(admin, voting=pb.VotingSpec(options=["红", "蓝"]))
    assert not_yet.value.code() is grpc.StatusCode.PERMISSION_DENIED
    await shop.gw.groups.AddAdmin(
        gateway_pb2.AddAdminRequest(group_set_id=shop.group.group_set_id, account_id=sub), metadata=shop.owner
    )
    vote = await shop.create(admin, voting=pb.VotingSpec(options=["红", "蓝"]))
    daily = await shop.create(admin, check_in=pb.CheckInSpec())
    member, outsider = await shop.member(), await shop.outsider()
    tally = await shop.api.Vote(
        pb.VoteRequest(store_id=shop.store_id, activity_id=vote.activity_id, option_index=1),
        metadata=shop.consumer(member),
    )
    assert list(tally.tally) == [0, 1]
    checked = await shop.api.CheckIn(
        pb.CheckInRequest(store_id=shop.store_id, activity_id=daily.activity_id), metadata=shop.consumer(member)
    )
    again = await shop.api.CheckIn(
        pb.CheckInRequest(store_id=shop.store_id, activity_id=daily.activity_id), metadata=shop.consumer(member)
    )
    assert checked.days_checked_in == 1 and again.already_checked_in
    with pytest.raises(grpc.aio.AioRpcError) as stranger:
        await shop.api.Vote(
            pb.VoteRequest(store_id=shop.store_id, activity_id=vote.activity_id, option_index=0),
            metadata=shop.consumer(outsider),
        )
    assert rules_of(stranger.value) == ["M13"]
    with pytest.raises(grpc.aio.AioRpcError) as consumer_creates:
        await shop.create(shop.consumer(member), check_in=pb.CheckInSpec())
    assert consumer_creates.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_M13_live_lucky_red_packets_go_to_iron_fans_in_live_fan_groups(
    gw: GatewayClient, platform: RunningStack
) -> None:
    store_id, main_id = await new_store(gw, platform)
    streamer = unique("st")
    await gw.report(facts.streamer(streamer, store_id=store_id))
    live = (
        await gw.groups.CreateGroupSet(
            gateway_pb2.CreateGroupSetRequest(
                kind=common_pb2.GROUP_KIND_LIVE,
                name="铁粉群",
                threshold=common_pb2.Threshold(
                    fan_level=common_pb2.FanLevelThreshold(min_level=common_pb2.FAN_LEVEL_IRON)
                ),
            ),
            metadata=gw.auth(Principal(streamer, Role.STREAMER)),
        )
    ).group_set
    shop = Shop(gw, platform, store_id, main_id, live)
    iron, no_fan = unique("c"), unique("c")
    await gw.report(
        facts.consumer(iron) + facts.consumer(no_fan) + [facts.fan_level(streamer, iron, common_pb2.FAN_LEVEL_IRON)]
    )
    await join(gw, iron, live.group_set_id)
    lucky = await shop.create(
        gw.auth(Principal(streamer, Role.STREAMER)),
        lucky_red_packet=pb.LuckyRedPacketSpec(value_fen=666, count=5, expires_at=ts(platform.now + timedelta(days=1))),
    )
    prize = await shop.claim(iron, lucky.activity_id)
    assert (prize.kind, prize.value_fen) == (CASH, 666)
    with pytest.raises(grpc.aio.AioRpcError) as below_iron:
        await shop.claim(no_fan, lucky.activity_id)
    assert rules_of(below_iron.value) == ["M13"]
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await shop.claim(iron, lucky.activity_id)
    assert rules_of(twice.value) == ["M10"]  # one each

    store_group = await new_group(gw, store_id, main_id)
    with pytest.raises(grpc.aio.AioRpcError) as store_kind:
        await Shop(gw, platform, store_id, main_id, store_group).create(
            lucky_red_packet=pb.LuckyRedPacketSpec(
                value_fen=1, count=1, expires_at=ts(platform.now + timedelta(days=1))
            )
        )
    assert reasons_of(store_kind.value) == ["LIVE_FAN_GROUPS_ONLY"]


# -- roles, idempotency, bad input -----------------------------------------------------------


async def test_only_upstream_systems_report_items_and_a_retried_purchase_buys_once(shop: Shop) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as merchant:
        await shop.api.ReportItem(
            pb.ReportItemRequest(
                store_id=shop.store_id,
                item_id="x",
                platform=facts_pb2.PLATFORM_TAOBAO,
                sku_count=1,
                price_min_fen=1,
                price_max_fen=1,
                initial_stock=100,
            ),
            metadata=shop.owner,
        )
    assert merchant.value.code() is grpc.StatusCode.PERMISSION_DENIED
    item_id = await shop.item(stock=4)
    member = await shop.member()
    request = pb.PurchaseRequest(
        request_id="retry-1", store_id=shop.store_id, order=pb.Order(item_id=item_id, quantity=2)
    )
    first = await shop.api.Purchase(request, metadata=shop.consumer(member))
    second = await shop.api.Purchase(request, metadata=shop.consumer(member))
    assert first.purchase == second.purchase and await shop.stock(item_id) == 2
    mine = await shop.api.GetPurchase(
        pb.GetPurchaseRequest(store_id=shop.store_id, purchase_id=first.purchase.purchase_id),
        metadata=shop.consumer(member),
    )
    assert mine.purchase == first.purchase
    with pytest.raises(grpc.aio.AioRpcError) as someone_else:
        await shop.api.GetPurchase(
            pb.GetPurchaseRequest(store_id=shop.store_id, purchase_id=first.purchase.purchase_id),
            metadata=shop.consumer(await shop.outsider()),
        )
    assert someone_else.value.code() is grpc.StatusCode.NOT_FOUND


async def test_bad_input_is_refused_with_the_field_or_the_rule_and_changes_nothing(shop: Shop) -> None:
    item_id = await shop.item(stock=5)
    member = await shop.member()
    for quantity in (0, -1):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await shop.buy(member, item_id, quantity)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in field_violations(status_from_error(refused.value))] == ["order.quantity"]
    with pytest.raises(grpc.aio.AioRpcError) as beyond:
        await shop.buy(member, item_id, 6)
    assert beyond.value.code() is grpc.StatusCode.FAILED_PRECONDITION and rules_of(beyond.value) == ["M2"]
    with pytest.raises(grpc.aio.AioRpcError) as price:
        await shop.flash_sale(item_id, price=0)
    assert price.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unknown_item:
        await shop.buy(member, "no-such-item", 1)
    assert unknown_item.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as unknown_activity:
        await shop.buy(member, item_id, 1, "act_missing")
    assert unknown_activity.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as eleven:
        await shop.buy(member, item_id, 1, cash_red_packet_ids=[f"clm_{i}" for i in range(11)])
    assert eleven.value.code() is grpc.StatusCode.NOT_FOUND  # not this consumer's packets: nothing to count
    target = await shop.create(check_in=pb.CheckInSpec())
    with pytest.raises(grpc.aio.AioRpcError) as trumpet_before:
        await shop.api.CreateTrumpet(
            pb.CreateTrumpetRequest(
                activity_id=target.activity_id,
                group_id=shop.group.sub_groups[0].sub_group_id,
                display_starts_at=ts(shop.platform.now - timedelta(hours=1)),
                message="早了",
            ),
            metadata=shop.owner,
        )
    assert trumpet_before.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "M12" in rules_of(
        trumpet_before.value
    )
    assert await shop.stock(item_id) == 5


# -- bounds (D2): nothing accepted fails later ---------------------------------------------


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {v.field: v.description for v in field_violations(status_from_error(error))}


async def test_D2_a_pool_past_the_largest_prize_is_refused_and_the_largest_fountain_is_bought_with_and_refunded(
    shop: Shop,
) -> None:
    start = shop.platform.now
    expires = ts(start + timedelta(days=1))
    with pytest.raises(grpc.aio.AioRpcError) as huge:
        await shop.create(
            red_packet_fountain=pb.FountainSpec(
                pools=[pb.PoolSpec(kind=CASH, value_fen=MAX_INT64, count=1, per_user_limit=1, expires_at=expires)]
            )
        )
    assert huge.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    refused = violations(huge.value)
    assert list(refused) == ["red_packet_fountain.pools[0].value_fen"]
    assert "bounds.prize_fen" in refused["red_packet_fountain.pools[0].value_fen"]

    # The extreme that is valid: the most pools, each of the most prizes at the largest value.
    prize, prizes, pools = BOUNDS.prize_fen, BOUNDS.pool_prizes, BOUNDS.pools_per_activity
    fountain = await shop.create(
        red_packet_fountain=pb.FountainSpec(
            pools=[
                pb.PoolSpec(kind=CASH, value_fen=prize, count=prizes, per_user_limit=prizes, expires_at=expires)
                for _ in range(pools)
            ]
        )
    )
    assert len(fountain.pools) == pools
    item_id = await shop.item(stock=BOUNDS.stock, price=BOUNDS.money_fen)
    member = await shop.member()
    packets = [(await shop.claim(member, fountain.activity_id)).claim_id for _ in range(11)]
    order = pb.Order(item_id=item_id, quantity=BOUNDS.quantity, cash_red_packet_ids=packets[:10])
    priced = await shop.api.PriceOrder(
        pb.PriceOrderRequest(store_id=shop.store_id, order=order), metadata=shop.consumer(member)
    )
    assert priced.price.subtotal_fen == BOUNDS.money_fen * BOUNDS.quantity
    assert priced.price.total_fen == BOUNDS.money_fen * BOUNDS.quantity - 10 * prize  # M4, M8
    bought = await shop.api.Purchase(
        pb.PurchaseRequest(request_id=unique("buy"), store_id=shop.store_id, order=order),
        metadata=shop.consumer(member),
    )
    assert bought.purchase.price.total_fen == priced.price.total_fen

    ops = shop.gw.auth(OPS)
    try:
        await at(shop.platform, start + timedelta(days=1, minutes=1))  # the fountain ended, packet 11 expired
        ran = await shop.api.RunExpiry(pb.RunExpiryRequest(), metadata=ops)
    finally:
        await at(shop.platform, start)
    unclaimed = (pools * prizes - 11) * prize  # M9: what nobody claimed, pool by pool
    assert list(ran.failures) == []
    # Other tests' stores in this stack may settle in the same run: at least this store's part.
    assert ran.pools_refunded >= pools and ran.red_packets_refunded >= 1 and ran.stores_settled >= 1
    assert ran.refunded_fen >= unclaimed + prize
    ledger = await shop.api.ListRefunds(
        pb.ListRefundsRequest(store_id=shop.store_id, page_size=100), metadata=shop.owner
    )
    assert len(ledger.refunds) == pools + 1
    assert ledger.total_fen == unclaimed + prize == sum(r.amount_fen for r in ledger.refunds)


async def test_D2_a_flash_price_past_the_largest_amount_is_refused_and_the_largest_sales_add_up_saturated(
    shop: Shop,
) -> None:
    most, quantity = BOUNDS.money_fen, BOUNDS.quantity
    item_id = await shop.item(stock=BOUNDS.stock, price=most)
    with pytest.raises(grpc.aio.AioRpcError) as huge:
        await shop.flash_sale(item_id, price=MAX_INT64)
    assert huge.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "bounds.money_fen" in violations(huge.value)["flash_sale.flash_price_fen"]

    sale = await shop.flash_sale(item_id, price=most)
    member = await shop.member()
    order = pb.Order(item_id=item_id, quantity=quantity, flash_sale_id=sale.activity_id)
    priced = await shop.api.PriceOrder(
        pb.PriceOrderRequest(store_id=shop.store_id, order=order), metadata=shop.consumer(member)
    )
    assert priced.price.total_fen == most * quantity  # the largest order: fits 64 bits (OVERFLOW_GUARDS)
    purchases = 10  # together more than the largest int64: the revenue is reported saturated
    for _ in range(purchases):
        bought = await shop.buy(member, item_id, quantity, sale.activity_id)
        assert bought.purchase.price.total_fen == most * quantity
    assert purchases * most * quantity > MAX_INT64
    results = await shop.api.GetFlashSaleResults(
        pb.GetFlashSaleResultsRequest(store_id=shop.store_id, activity_id=sale.activity_id), metadata=shop.owner
    )
    assert (results.units_sold, results.purchases, results.revenue_fen) == (purchases * quantity, purchases, MAX_INT64)
    assert results.stock_left == BOUNDS.stock - purchases * quantity
    ended = await shop.api.EndActivity(
        pb.EndActivityRequest(store_id=shop.store_id, activity_id=sale.activity_id), metadata=shop.owner
    )
    assert ended.end_card.units_sold == purchases * quantity  # M6


async def test_D2_a_restock_past_the_largest_stock_is_refused_and_writes_nothing(shop: Shop) -> None:
    item_id = await shop.item(stock=BOUNDS.stock)
    restock = pb.RestockRequest(request_id=unique("rs"), store_id=shop.store_id, item_id=item_id, quantity=1)
    for attempt in range(2):  # a retry with the same request id is judged afresh, and refused again
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await shop.api.Restock(restock, metadata=shop.gw.auth(UPSTREAM))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION, attempt
        [failure] = failures_from_status(status_from_error(refused.value))
        assert (failure.rule_id, failure.reason) == ("D2", "STOCK_LIMIT")
        assert failure.figures == {"stock": str(BOUNDS.stock), "quantity": "1", "max": str(BOUNDS.stock)}
        assert await shop.stock(item_id) == BOUNDS.stock  # unchanged, and the item reads
    # No restock row was kept: once a sale makes room, the same request id adds its unit (not a replay).
    await shop.buy(await shop.outsider(), item_id, 1)
    again = await shop.api.Restock(restock, metadata=shop.gw.auth(UPSTREAM))
    assert again.item.stock == BOUNDS.stock
    replayed = await shop.api.Restock(restock, metadata=shop.gw.auth(UPSTREAM))
    assert replayed.item.stock == BOUNDS.stock  # now it was written: a retry adds nothing


# -- visibility (V1, V3) -----------------------------------------------------------------------


async def test_V1_a_non_public_sets_activities_show_to_its_members_staff_and_ops_only(shop: Shop) -> None:
    assert not shop.group.is_public
    hidden = await shop.create(check_in=pb.CheckInSpec())
    now = shop.platform.now
    await shop.gw.groups.SetGroupLevel(  # L4: room for a second group-set
        gateway_pb2.SetGroupLevelRequest(store_id=shop.store_id, month=f"{now.year:04d}-{now.month:02d}", level=4),
        metadata=shop.gw.auth(OPS),
    )
    public_group = await new_group(shop.gw, shop.store_id, shop.main_id, is_public=True)
    shown = await Shop(shop.gw, shop.platform, shop.store_id, shop.main_id, public_group).create(
        check_in=pb.CheckInSpec()
    )
    member, outsider = await shop.member(), await shop.outsider()
    get = pb.GetActivityRequest(store_id=shop.store_id, activity_id=hidden.activity_id)
    everyone = pb.ListActivitiesRequest(store_id=shop.store_id)
    in_hidden_set = pb.ListActivitiesRequest(store_id=shop.store_id, group_set_id=shop.group.group_set_id)

    for who in (shop.consumer(outsider), shop.gw.auth(UPSTREAM), shop.gw.auth(Principal(unique("st"), Role.STREAMER))):
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await shop.api.GetActivity(get, metadata=who)
        assert not_found.value.code() is grpc.StatusCode.NOT_FOUND  # as if it did not exist: not even its set
        listed = await shop.api.ListActivities(everyone, metadata=who)
        assert [a.activity_id for a in listed.activities] == [shown.activity_id]
        assert shop.group.group_set_id not in str(listed)
        assert list((await shop.api.ListActivities(in_hidden_set, metadata=who)).activities) == []

    for who in (shop.consumer(member), shop.owner, shop.gw.auth(OPS)):
        assert (await shop.api.GetActivity(get, metadata=who)).activity.group_set_id == shop.group.group_set_id
        listed = await shop.api.ListActivities(everyone, metadata=who)
        assert {a.activity_id for a in listed.activities} == {hidden.activity_id, shown.activity_id}


async def test_V3_the_item_page_module_hides_on_an_item_with_a_group_buy_running_in_qun(
    gw: GatewayClient, platform: RunningStack
) -> None:
    store_id, main_id = await new_store(gw, platform)
    public_group = await new_group(gw, store_id, main_id, is_public=True)
    shop = Shop(gw, platform, store_id, main_id, public_group)
    in_group_buy, other = await shop.item(stock=10), await shop.item(stock=10)
    group_buy = await shop.create(group_buy=pb.GroupBuySpec(item_id=in_group_buy, group_price_fen=8_000, group_size=2))
    consumer = await shop.outsider()  # follows the store: meets the follow threshold
    discovery = operations_pb2_grpc.DiscoveryServiceStub(shop.gw.channel)

    async def module(item_id: str) -> operations_pb2.GetItemPageModuleResponse:
        return await discovery.GetItemPageModule(
            operations_pb2.GetItemPageModuleRequest(store_id=shop.store_id, item_id=item_id),
            metadata=shop.consumer(consumer),
        )

    hidden = await module(in_group_buy)  # the caller did not say in_group_buy: qun knows
    assert not any(e.shown for e in hidden.entries)
    assert [(r.rule_id, r.reason) for r in hidden.module_reasons] == [("V3", "ITEM_IN_GROUP_BUY")]
    assert dict(hidden.module_reasons[0].figures) == {"activity_id": group_buy.activity_id}
    assert [e.group_set_id for e in (await module(other)).entries if e.shown] == [public_group.group_set_id]
    await shop.api.EndActivity(
        pb.EndActivityRequest(store_id=shop.store_id, activity_id=group_buy.activity_id), metadata=shop.owner
    )
    assert [e.group_set_id for e in (await module(in_group_buy)).entries if e.shown] == [public_group.group_set_id]
