"""The CampaignsService RPCs: validate the whole request, run one transaction, answer.

Input is checked field by field before anything touches the database (one
INVALID_ARGUMENT naming every bad field); rule refusals are raised as
``services.common.errors`` exceptions, which the error interceptor turns into
rich statuses. Domain metrics are counted after the transaction committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from qun.campaigns.v1 import campaigns_pb2 as pb
from qun.campaigns.v1 import campaigns_pb2_grpc
from qun.common.v1 import facts_pb2
from services.campaigns import kinds, metrics
from services.campaigns import rules as domain
from services.campaigns.activities import Activities, NewActivity, NewTrumpet
from services.campaigns.convert import (
    PLATFORM_FROM_PROTO,
    activity_to_proto,
    claim_to_proto,
    end_card_to_proto,
    item_to_proto,
    pricing_to_proto,
    purchase_to_proto,
    records_to_proto,
    refund_to_proto,
    trumpet_to_proto,
)
from services.campaigns.end_cards import EndCards
from services.campaigns.expiry import ExpiryJob
from services.campaigns.interactions import Interactions
from services.campaigns.items import Items, ItemUpdate
from services.campaigns.orders import OrderInput, OrderRepository, PurchaseOutcome
from services.campaigns.prizes import Prizes
from services.campaigns.refunds import Refunds
from services.campaigns.repository import UnitOfWork
from services.common.bounds import saturated
from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import RuleRefusal
from services.common.jobs import failure_to_proto
from services.common.page_tokens import decode_keyset, encode_keyset
from services.common.races import retry_lost_race
from services.common.rules import GROUP_LEVELS, BoundsRules, Rules
from services.common.validation import MAX_NAME_CHARS, Fields

T = TypeVar("T")
U = TypeVar("U", bound=UnitOfWork)

MAX_MESSAGE_CHARS = 200
# Every other upper bound is the rules file's ``[bounds]`` (SPEC D2): the same numbers the gateway checks,
# chosen so the sums and products below fit a signed 64-bit integer (``OVERFLOW_GUARDS``). A list longer
# than ``bounds.order_entries`` is malformed input, not a rule's business (M8 refuses anything past 10).


def _ids(f: Fields, name: str, values: object, most: int) -> tuple[str, ...]:
    out: list[str] = []
    items = list(values)  # type: ignore[call-overload]
    if len(items) > most:
        f.fail(name, f"at most {most} entries (bounds.order_entries), got {len(items)}")
        return ()
    for i, value in enumerate(items):
        f.identifier(f"{name}[{i}]", value)
        if value in out:
            f.fail(f"{name}[{i}]", f"{value} is listed twice")
        out.append(value)
    return tuple(out)


def _order(f: Fields, msg: pb.Order, present: bool, bounds: BoundsRules, *, purchase: bool) -> OrderInput:
    """The order as validated: the quantity, every listed prize and red packet within ``[bounds]`` (D2), so
    its price (``domain.Pricing``) fits 64 bits."""
    if not present:
        f.fail("order", "required")
        return OrderInput("", 0)
    f.identifier("order.item_id", msg.item_id)
    f.within_bound("order.quantity", msg.quantity, bounds, "quantity")
    f.identifier("order.flash_sale_id", msg.flash_sale_id, required=False)
    cash = _ids(f, "order.cash_red_packet_ids", msg.cash_red_packet_ids, bounds.order_entries)
    coupons = _ids(f, "order.store_coupon_ids", msg.store_coupon_ids, bounds.order_entries)
    for dup in set(cash) & set(coupons):
        f.fail("order.store_coupon_ids", f"{dup} is also listed as a cash red packet")
    store_red_packets = list(msg.store_red_packet_fen)
    if purchase and store_red_packets:
        f.fail("order.store_red_packet_fen", "store red packets issued elsewhere are priced by PriceOrder only")
    if len(store_red_packets) > bounds.order_entries:
        f.fail("order.store_red_packet_fen", f"at most {bounds.order_entries} entries (bounds.order_entries)")
        store_red_packets = []
    for i, value in enumerate(store_red_packets):
        f.within_bound(f"order.store_red_packet_fen[{i}]", value, bounds, "prize_fen")
    return OrderInput(
        item_id=msg.item_id,
        quantity=msg.quantity,
        flash_sale_id=msg.flash_sale_id,
        cash_red_packet_ids=cash,
        store_coupon_ids=coupons,
        store_red_packet_fen=tuple(store_red_packets),
    )


class CampaignsServiceServicer(campaigns_pb2_grpc.CampaignsServiceServicer):
    def __init__(self, db: Database, rules: Rules, clock: Clock, expiry: ExpiryJob) -> None:
        self.db = db
        self.rules = rules
        self.clock = clock
        self.expiry = expiry

    async def _run(self, unit: type[U], work: Callable[[U], Awaitable[T]]) -> T:
        """``work`` in one transaction, on the unit of work of the aggregate it changes or reads."""
        async with self.db.transaction() as session:
            return await work(unit(session, self.rules, self.clock.now()))

    async def _write(self, unit: type[U], work: Callable[[U], Awaitable[T]]) -> T:
        return await retry_lost_race(lambda: self._run(unit, work))

    # -- items -------------------------------------------------------------------------------

    async def UpsertItem(
        self, request: pb.UpsertItemRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertItemResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("item_id", request.item_id)
        platform = f.enum("platform", request.platform, facts_pb2.Platform, allowed=tuple(PLATFORM_FROM_PROTO))
        bounds = self.rules.bounds
        f.within_bound("sku_count", request.sku_count, bounds, "skus_per_item")
        f.within_bound("price_min_fen", request.price_min_fen, bounds, "money_fen")
        f.within_bound("price_max_fen", request.price_max_fen, bounds, "money_fen")
        if 0 < request.price_max_fen < request.price_min_fen:
            f.fail("price_max_fen", f"must be at least price_min_fen ({request.price_min_fen})")
        if not 0 <= request.initial_stock <= bounds.stock:
            f.fail(
                "initial_stock", f"must be between 0 and {bounds.stock:,} (bounds.stock), got {request.initial_stock:,}"
            )
        f.done()
        update = ItemUpdate(
            store_id=request.store_id,
            item_id=request.item_id,
            platform=PLATFORM_FROM_PROTO[platform],
            sku_count=request.sku_count,
            price_min_fen=request.price_min_fen,
            price_max_fen=request.price_max_fen,
            initial_stock=request.initial_stock,
        )
        row, created = await self._write(Items, lambda repo: repo.upsert_item(update))
        return pb.UpsertItemResponse(item=item_to_proto(row), created=created)

    async def GetItem(self, request: pb.GetItemRequest, context: grpc.aio.ServicerContext) -> pb.GetItemResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("item_id", request.item_id)
        f.done()
        row = await self._run(UnitOfWork, lambda repo: repo.item(request.store_id, request.item_id))
        return pb.GetItemResponse(item=item_to_proto(row))

    async def Restock(self, request: pb.RestockRequest, context: grpc.aio.ServicerContext) -> pb.RestockResponse:
        f = Fields()
        f.identifier("request_id", request.request_id)
        f.identifier("store_id", request.store_id)
        f.identifier("item_id", request.item_id)
        f.within_bound("quantity", request.quantity, self.rules.bounds, "quantity")
        f.done()
        row, replayed = await self._write(
            Items, lambda repo: repo.restock(request.request_id, request.store_id, request.item_id, request.quantity)
        )
        return pb.RestockResponse(item=item_to_proto(row), replayed=replayed)

    # -- activities --------------------------------------------------------------------------

    def _new_activity(self, request: pb.CreateActivityRequest) -> NewActivity:
        f = Fields()
        f.identifier("request_id", request.request_id, required=False)
        f.identifier("store_id", request.store_id)
        f.identifier("group_set_id", request.group_set_id)
        f.identifier("created_by", request.created_by)
        f.text("title", request.title, max_chars=MAX_NAME_CHARS, required=True)
        starts_at, ends_at = f.instant_field(request, "starts_at"), f.instant_field(request, "ends_at")
        if starts_at and ends_at:
            if ends_at <= starts_at:
                f.fail("ends_at", "must be after starts_at")
            elif ends_at <= self.clock.now():
                f.fail("ends_at", "must be in the future")
        declared = kinds.of_spec(request.WhichOneof("spec"))
        if declared is None:
            f.fail("spec", "required: one of " + ", ".join(d.spec for d in kinds.DECLARATIONS))
        f.done()
        assert declared is not None and starts_at is not None and ends_at is not None
        kind = declared.kind
        retired = domain.retired_tool_failures(kind)
        if retired:
            for failure in retired:
                metrics.activities.labels(str(kind), "refused", failure.rule_id).inc()
            raise RuleRefusal(retired)
        f = Fields()  # the kind's own spec, checked once the fields every kind has are sound
        spec = declared.validate(f, getattr(request, declared.spec), self.rules.bounds, starts_at)
        f.done()
        return NewActivity(
            request_id=request.request_id,
            store_id=request.store_id,
            group_set_id=request.group_set_id,
            created_by=request.created_by,
            kind=kind,
            title=request.title,
            window=domain.Window(starts_at, ends_at),
            item_id=spec.item_id,
            price_fen=spec.price_fen,
            group_size=spec.group_size,
            options=spec.options,
            pools=spec.pools,
        )

    async def CreateActivity(
        self, request: pb.CreateActivityRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateActivityResponse:
        new = self._new_activity(request)
        try:
            view, at_once, created = await self._write(Activities, lambda repo: repo.create_activity(new))
        except RuleRefusal as refusal:
            for failure in refusal.failures:
                metrics.activities.labels(str(new.kind), "refused", failure.rule_id).inc()
            raise
        if created:
            metrics.activities.labels(str(new.kind), "created", "").inc()
            metrics.active_activities.observe(at_once)
        return pb.CreateActivityResponse(
            activity=activity_to_proto(view, self.clock.now()), concurrent_activities=at_once
        )

    async def GetActivity(
        self, request: pb.GetActivityRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetActivityResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("activity_id", request.activity_id)
        f.done()
        view = await self._run(UnitOfWork, lambda repo: repo.activity_view(request.store_id, request.activity_id))
        return pb.GetActivityResponse(activity=activity_to_proto(view, self.clock.now()))

    async def ListActivities(
        self, request: pb.ListActivitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListActivitiesResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("group_set_id", request.group_set_id, required=False)
        limit = f.page_size("page_size", request.page_size)
        f.done()
        cursor = decode_keyset(request.page_token)
        views, after = await self._run(
            Activities, lambda repo: repo.list_activities(request.store_id, request.group_set_id, cursor, limit)
        )
        now = self.clock.now()
        return pb.ListActivitiesResponse(
            activities=[activity_to_proto(v, now) for v in views], next_page_token=encode_keyset(after)
        )

    async def GetItemGroupBuy(
        self, request: pb.GetItemGroupBuyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetItemGroupBuyResponse:
        """V3: whether the item is in a group buy running now (the gateway then hides the item-page module)."""
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("item_id", request.item_id)
        f.done()
        running = await self._run(Activities, lambda repo: repo.running_group_buy(request.store_id, request.item_id))
        return pb.GetItemGroupBuyResponse(in_group_buy=running is not None, activity_id=running or "")

    async def EndActivity(
        self, request: pb.EndActivityRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndActivityResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("activity_id", request.activity_id)
        f.done()
        view, card, posted = await self._write(
            Activities, lambda repo: repo.end_activity(request.store_id, request.activity_id)
        )
        if posted:
            metrics.end_cards.inc()
            metrics.forget_flash_sale(request.activity_id)
        response = pb.EndActivityResponse(activity=activity_to_proto(view, self.clock.now()))
        if card is not None:
            response.end_card.CopyFrom(end_card_to_proto(card))
        return response

    async def CreateTrumpet(
        self, request: pb.CreateTrumpetRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTrumpetResponse:
        f = Fields()
        f.identifier("request_id", request.request_id, required=False)
        f.identifier("store_id", request.store_id)
        f.identifier("activity_id", request.activity_id)
        f.identifier("sub_group_id", request.sub_group_id)
        f.identifier("created_by", request.created_by)
        f.in_range("group_level", request.group_level, 0, GROUP_LEVELS - 1)
        f.text("message", request.message, max_chars=MAX_MESSAGE_CHARS, required=True)
        display = f.instant_field(request, "display_starts_at")
        f.done()
        assert display is not None
        new = NewTrumpet(
            request_id=request.request_id,
            store_id=request.store_id,
            activity_id=request.activity_id,
            sub_group_id=request.sub_group_id,
            on_sub_group=request.on_sub_group,
            group_level=request.group_level,
            display_starts_at=display,
            message=request.message,
            created_by=request.created_by,
        )
        row, _ = await self._write(Activities, lambda repo: repo.create_trumpet(new))
        return pb.CreateTrumpetResponse(trumpet=trumpet_to_proto(row))

    # -- orders ------------------------------------------------------------------------------

    async def PriceOrder(
        self, request: pb.PriceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.PriceOrderResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("consumer_id", request.consumer_id)
        order = _order(f, request.order, request.HasField("order"), self.rules.bounds, purchase=False)
        f.done()
        async with self.db.read() as connection:
            quote = await OrderRepository(connection, self.rules, self.clock.now()).quote(
                request.store_id, request.consumer_id, order, group_member=request.group_member
            )
        if quote.failures:
            raise RuleRefusal(quote.failures)
        return pb.PriceOrderResponse(
            price=pricing_to_proto(quote.pricing),
            price_records=records_to_proto(quote.price_records),
            stock=quote.stock,
        )

    async def _purchase(self, request: pb.PurchaseRequest, order: OrderInput) -> PurchaseOutcome:
        async with self.db.write() as connection:
            return await OrderRepository(connection, self.rules, self.clock.now()).purchase(
                request.request_id, request.store_id, request.consumer_id, order, group_member=request.group_member
            )

    async def Purchase(self, request: pb.PurchaseRequest, context: grpc.aio.ServicerContext) -> pb.PurchaseResponse:
        f = Fields()
        f.identifier("request_id", request.request_id)
        f.identifier("store_id", request.store_id)
        f.identifier("consumer_id", request.consumer_id)
        order = _order(f, request.order, request.HasField("order"), self.rules.bounds, purchase=True)
        f.done()
        flash = bool(order.flash_sale_id)
        sale = metrics.sale_label(flash)
        try:
            outcome = await retry_lost_race(lambda: self._purchase(request, order))
        except RuleRefusal as refusal:
            metrics.purchase_refused(flash, [x.rule_id for x in refusal.failures])
            raise
        if outcome.replayed:
            metrics.purchases.labels(sale, "replayed", "").inc()
        else:
            metrics.purchases.labels(sale, "purchased", "").inc()
            if outcome.stock_left == 0:
                metrics.sold_out.labels(sale).inc()
            if flash:
                metrics.flash_stock(request.store_id, order.flash_sale_id, outcome.stock_left)
        return pb.PurchaseResponse(
            purchase=purchase_to_proto(outcome.purchase), stock_left=outcome.stock_left, replayed=outcome.replayed
        )

    async def GetPurchase(
        self, request: pb.GetPurchaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPurchaseResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("purchase_id", request.purchase_id)
        f.done()
        row = await self._run(Items, lambda repo: repo.get_purchase(request.store_id, request.purchase_id))
        return pb.GetPurchaseResponse(purchase=purchase_to_proto(row))

    async def ListSales(self, request: pb.ListSalesRequest, context: grpc.aio.ServicerContext) -> pb.ListSalesResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("item_id", request.item_id, required=False)
        f.identifier("flash_sale_id", request.flash_sale_id, required=False)
        f.identifier("consumer_id", request.consumer_id, required=False)
        limit = f.page_size("page_size", request.page_size)
        f.done()
        cursor = decode_keyset(request.page_token)
        rows, after = await self._run(
            Items,
            lambda repo: repo.list_sales(
                request.store_id,
                item_id=request.item_id,
                flash_sale_id=request.flash_sale_id,
                consumer_id=request.consumer_id,
                after=cursor,
                limit=limit,
            ),
        )
        return pb.ListSalesResponse(
            purchases=[purchase_to_proto(r) for r in rows], next_page_token=encode_keyset(after)
        )

    async def CancelPurchase(
        self, request: pb.CancelPurchaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelPurchaseResponse:
        f = Fields()
        f.identifier("request_id", request.request_id)
        f.identifier("store_id", request.store_id)
        f.identifier("purchase_id", request.purchase_id)
        f.done()
        row, stock, replayed = await self._write(
            Items, lambda repo: repo.cancel_purchase(request.request_id, request.store_id, request.purchase_id)
        )
        return pb.CancelPurchaseResponse(purchase=purchase_to_proto(row), stock=stock, replayed=replayed)

    # -- claims, voting, check-in ------------------------------------------------------------

    async def ClaimPrize(
        self, request: pb.ClaimPrizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClaimPrizeResponse:
        f = Fields()
        f.identifier("request_id", request.request_id)
        f.identifier("store_id", request.store_id)
        f.identifier("activity_id", request.activity_id)
        f.identifier("pool_id", request.pool_id, required=False)
        f.identifier("consumer_id", request.consumer_id)
        f.done()
        try:
            outcome = await self._write(
                Prizes,
                lambda repo: repo.claim(
                    request.request_id,
                    request.store_id,
                    request.activity_id,
                    request.pool_id,
                    request.consumer_id,
                    group_member=request.group_member,
                ),
            )
        except RuleRefusal as refusal:
            metrics.claim_refused([x.rule_id for x in refusal.failures])
            raise
        metrics.claims.labels("replayed" if outcome.replayed else "claimed", "").inc()
        return pb.ClaimPrizeResponse(claim=claim_to_proto(outcome.claim, self.clock.now()), replayed=outcome.replayed)

    async def ListWallet(
        self, request: pb.ListWalletRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWalletResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("consumer_id", request.consumer_id)
        limit = f.page_size("page_size", request.page_size)
        f.done()
        cursor = decode_keyset(request.page_token)
        rows, after, held = await self._run(
            Prizes, lambda repo: repo.wallet(request.store_id, request.consumer_id, cursor, limit)
        )
        now = self.clock.now()
        return pb.ListWalletResponse(
            claims=[claim_to_proto(r, now) for r in rows],
            next_page_token=encode_keyset(after),
            held=held,
            wallet_size=self.rules.campaigns.wallet_size,
        )

    async def Vote(self, request: pb.VoteRequest, context: grpc.aio.ServicerContext) -> pb.VoteResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("activity_id", request.activity_id)
        f.identifier("consumer_id", request.consumer_id)
        f.in_range("option_index", request.option_index, 0, self.rules.bounds.vote_options - 1)
        f.done()
        tally, option = await self._write(
            Interactions,
            lambda repo: repo.vote(
                request.store_id,
                request.activity_id,
                request.consumer_id,
                request.option_index,
                group_member=request.group_member,
            ),
        )
        return pb.VoteResponse(tally=tally, option_index=option)

    async def CheckIn(self, request: pb.CheckInRequest, context: grpc.aio.ServicerContext) -> pb.CheckInResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("activity_id", request.activity_id)
        f.identifier("consumer_id", request.consumer_id)
        f.done()
        day, days, replayed = await self._write(
            Interactions,
            lambda repo: repo.check_in(
                request.store_id, request.activity_id, request.consumer_id, group_member=request.group_member
            ),
        )
        return pb.CheckInResponse(day=day, days_checked_in=days, replayed=replayed)

    # -- results, end cards, refunds, expiry -------------------------------------------------

    async def GetFlashSaleResults(
        self, request: pb.GetFlashSaleResultsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFlashSaleResultsResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("activity_id", request.activity_id)
        f.done()
        view, figures, card = await self._run(
            EndCards, lambda repo: repo.flash_sale_results(request.store_id, request.activity_id)
        )
        response = pb.GetFlashSaleResultsResponse(activity=activity_to_proto(view, self.clock.now()), **figures)
        if card is not None:
            response.end_card.CopyFrom(end_card_to_proto(card))
        return response

    async def ListEndCards(
        self, request: pb.ListEndCardsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEndCardsResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("group_set_id", request.group_set_id, required=False)
        if request.after_seq < 0:
            f.fail("after_seq", f"must not be negative, got {request.after_seq}")
        limit = f.page_size("page_size", request.page_size)
        f.done()
        cards = await self._run(
            EndCards, lambda repo: repo.list_end_cards(request.store_id, request.group_set_id, request.after_seq, limit)
        )
        return pb.ListEndCardsResponse(
            end_cards=[end_card_to_proto(c) for c in cards], last_seq=cards[-1].seq if cards else request.after_seq
        )

    async def ListRefunds(
        self, request: pb.ListRefundsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRefundsResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        limit = f.page_size("page_size", request.page_size)
        f.done()
        cursor = decode_keyset(request.page_token)
        rows, after, total = await self._run(Refunds, lambda repo: repo.list_refunds(request.store_id, cursor, limit))
        return pb.ListRefundsResponse(
            refunds=[refund_to_proto(r) for r in rows],
            next_page_token=encode_keyset(after),
            total_fen=saturated(total),  # D2: a total over the store's whole ledger, exact until it saturates
        )

    async def RunExpiry(self, request: pb.RunExpiryRequest, context: grpc.aio.ServicerContext) -> pb.RunExpiryResponse:
        """Ops' trigger: every store is tried now, also those the timer set aside; the stores it could not
        settle are listed, not raised (D3), and the money refunded is reported saturated (D2)."""
        report = await self.expiry.run_once(retry_now=True)
        counts = report.counts
        return pb.RunExpiryResponse(
            red_packets_refunded=counts.red_packets_refunded,
            pools_refunded=counts.pools_refunded,
            coupons_expired=counts.coupons_expired,
            end_cards_posted=counts.end_cards_posted,
            refunded_fen=saturated(counts.refunded_fen),
            stores_settled=len(report.stores_settled),
            failures=[failure_to_proto(failure) for failure in report.failures],
        )
