"""The CampaignsService RPCs: the request validated whole (``requests``), one transaction, the answer.

Each RPC runs on the unit of work of the aggregate it reads or changes; rule
refusals are raised as ``services.common.errors`` exceptions, which the error
interceptor turns into rich statuses. Domain metrics are counted after the
transaction committed.

Over 400 lines on purpose: one class is the CampaignsService contract, 21 RPCs of a few lines each (ids, one
unit of work, metrics, the answer); validation is in ``requests`` and persistence in the aggregates' modules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from qun.campaigns.v1 import campaigns_pb2 as pb
from qun.campaigns.v1 import campaigns_pb2_grpc
from services.campaigns import metrics
from services.campaigns import rules as domain
from services.campaigns.activities import Activities
from services.campaigns.convert import (
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
from services.campaigns.items import Items
from services.campaigns.orders import OrderInput, OrderRepository, PurchaseOutcome
from services.campaigns.prizes import Prizes
from services.campaigns.refunds import Refunds
from services.campaigns.repository import UnitOfWork
from services.campaigns.requests import item_update, new_activity, new_trumpet, order_input
from services.common.bounds import saturated
from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import RuleRefusal
from services.common.jobs import failure_to_proto
from services.common.page_tokens import decode_keyset, encode_keyset
from services.common.races import retry_lost_race
from services.common.rules import Rules
from services.common.validation import Fields, require_ids, require_page

T = TypeVar("T")
U = TypeVar("U", bound=UnitOfWork)


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
        update = item_update(request, self.rules.bounds)
        row, created = await self._write(Items, lambda repo: repo.upsert_item(update))
        return pb.UpsertItemResponse(item=item_to_proto(row), created=created)

    async def GetItem(self, request: pb.GetItemRequest, context: grpc.aio.ServicerContext) -> pb.GetItemResponse:
        require_ids(request, "store_id", "item_id")
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

    async def CreateActivity(
        self, request: pb.CreateActivityRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateActivityResponse:
        new = new_activity(request, self.rules.bounds, self.clock.now())
        retired = domain.retired_tool_failures(new.kind)
        if retired:
            for failure in retired:
                metrics.activities.labels(str(new.kind), "refused", failure.rule_id).inc()
            raise RuleRefusal(retired)
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
        require_ids(request, "store_id", "activity_id")
        view = await self._run(UnitOfWork, lambda repo: repo.activity_view(request.store_id, request.activity_id))
        return pb.GetActivityResponse(activity=activity_to_proto(view, self.clock.now()))

    async def ListActivities(
        self, request: pb.ListActivitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListActivitiesResponse:
        limit = require_page(request, "store_id", optional=("group_set_id",))
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
        require_ids(request, "store_id", "item_id")
        running = await self._run(Activities, lambda repo: repo.running_group_buy(request.store_id, request.item_id))
        return pb.GetItemGroupBuyResponse(in_group_buy=running is not None, activity_id=running or "")

    async def EndActivity(
        self, request: pb.EndActivityRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndActivityResponse:
        require_ids(request, "store_id", "activity_id")
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
        new = new_trumpet(request)
        row, _ = await self._write(Activities, lambda repo: repo.create_trumpet(new))
        return pb.CreateTrumpetResponse(trumpet=trumpet_to_proto(row))

    # -- orders ------------------------------------------------------------------------------

    async def PriceOrder(
        self, request: pb.PriceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.PriceOrderResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("consumer_id", request.consumer_id)
        order = order_input(f, request.order, request.HasField("order"), self.rules.bounds, purchase=False)
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
        order = order_input(f, request.order, request.HasField("order"), self.rules.bounds, purchase=True)
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
        require_ids(request, "store_id", "purchase_id")
        row = await self._run(Items, lambda repo: repo.get_purchase(request.store_id, request.purchase_id))
        return pb.GetPurchaseResponse(purchase=purchase_to_proto(row))

    async def ListSales(self, request: pb.ListSalesRequest, context: grpc.aio.ServicerContext) -> pb.ListSalesResponse:
        limit = require_page(request, "store_id", optional=("item_id", "flash_sale_id", "consumer_id"))
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
        require_ids(request, "request_id", "store_id", "purchase_id")
        row, stock, replayed = await self._write(
            Items, lambda repo: repo.cancel_purchase(request.request_id, request.store_id, request.purchase_id)
        )
        return pb.CancelPurchaseResponse(purchase=purchase_to_proto(row), stock=stock, replayed=replayed)

    # -- claims, voting, check-in ------------------------------------------------------------

    async def ClaimPrize(
        self, request: pb.ClaimPrizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClaimPrizeResponse:
        require_ids(request, "request_id", "store_id", "activity_id", "consumer_id", optional=("pool_id",))
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
        limit = require_page(request, "store_id", "consumer_id")
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
        require_ids(request, "store_id", "activity_id", "consumer_id")
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
        require_ids(request, "store_id", "activity_id")
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
        limit = require_page(request, "store_id")
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
