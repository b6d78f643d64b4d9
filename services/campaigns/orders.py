"""The order path's persistence: PriceOrder and Purchase, in few prebuilt statements.

A flash sale is the busiest write of the service, so this path skips the ORM
(docs/adr/0006-hot-paths-off-the-orm.md) and reads what a
decision needs in as few round trips as the rules allow. A purchase is:

* one read: the item, the flash sale (share-locked) and whether the request
  id was used already (the replay);
* the prizes it applies, when it applies any (M8, M9);
* the conditional decrement of the stock (M2), the prizes marked used, the
  purchase row.

The guards are those ``repository`` describes: the decrement is the one guard
of M2, the unique ``(store_id, request_id)`` makes a racing retry fail its
insert (the caller's retry then replays), and the locks are taken in the
service's order (activity, item, claims). The statements are built once, with
bound parameters, so SQLAlchemy finds their compiled form without rebuilding
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam, exists, insert, select, update

from services.campaigns import rules as domain
from services.campaigns.kinds import ActivityKind
from services.campaigns.models import Activity, Claim, Item, Purchase
from services.campaigns.repository import claim_state
from services.campaigns.rules import ClaimState, Platform, PrizeKind
from services.common.db import Statements
from services.common.errors import Failure, InvalidArgument, NotFound, RuleRefusal
from services.common.ids import new_id
from services.common.request_ids import check_same_request, request_fingerprint
from services.common.rules import Rules
from services.common.schema import table_of
from services.common.sqlite_driver import on_driver
from services.common.sqltypes import UtcDateTime

items = table_of(Item)
activities = table_of(Activity)
claims = table_of(Claim)
purchases = table_of(Purchase)

STORE, ITEM, SALE = bindparam("store"), bindparam("item"), bindparam("sale")
CONSUMER, REQUEST, QUANTITY = bindparam("consumer"), bindparam("request"), bindparam("quantity")
NOW = bindparam("now", type_=UtcDateTime())
CLAIM_IDS = bindparam("claim_ids", expanding=True)


@dataclass(frozen=True)
class OrderInput:
    item_id: str
    quantity: int
    flash_sale_id: str = ""
    cash_red_packet_ids: tuple[str, ...] = ()
    store_coupon_ids: tuple[str, ...] = ()
    store_red_packet_fen: tuple[int, ...] = ()

    @property
    def prize_ids(self) -> list[str]:
        return [*self.cash_red_packet_ids, *self.store_coupon_ids]


@dataclass(frozen=True)
class Quote:
    stock: int
    pricing: domain.Pricing
    price_records: tuple[tuple[domain.PriceRecord, bool], ...]
    failures: list[Failure]


@dataclass(frozen=True)
class PurchaseOutcome:
    """A purchase row (``purchases`` columns, read or as written) and the stock left after it."""

    purchase: Row[Any]
    stock_left: int
    replayed: bool


def _order_statement(*, flash: bool, buying: bool) -> Select[Any]:
    """What an order is priced from, in one statement: the item, the flash sale, and (buying) the replay flag.

    Buying, the sale is share-locked: the end card (M6), which locks the sale
    for update, counts this purchase or sees it refused.
    """
    columns: list[Any] = [
        items.c.platform,
        items.c.sku_count,
        items.c.price_min_fen,
        items.c.price_max_fen,
        items.c.stock,
    ]
    source: Any = items
    if flash:
        columns += [
            activities.c.kind,
            activities.c.item_id.label("sale_item_id"),
            activities.c.price_fen,
            activities.c.starts_at,
            activities.c.ends_at,
            activities.c.ended_at,
            activities.c.end_card_posted,
        ]
        sale = and_(activities.c.store_id == items.c.store_id, activities.c.activity_id == SALE)
        source = items.join(activities, sale)
    if buying:
        used = exists().where(purchases.c.store_id == STORE, purchases.c.request_id == REQUEST)
        columns.append(used.label("request_used"))
    stmt = select(*columns).select_from(source).where(items.c.store_id == STORE, items.c.item_id == ITEM)
    return stmt.with_for_update(read=True, of=activities) if flash and buying else stmt


_ORDER = {
    (flash, buying): _order_statement(flash=flash, buying=buying) for flash in (False, True) for buying in (False, True)
}
_STOCK = select(items.c.stock).where(items.c.store_id == STORE, items.c.item_id == ITEM)
_EARLIER = (
    select(purchases, items.c.stock.label("stock_left"))
    .join(items, and_(items.c.store_id == purchases.c.store_id, items.c.item_id == purchases.c.item_id))
    .where(purchases.c.store_id == STORE, purchases.c.request_id == REQUEST)
)
_PRIZES = select(claims).where(claims.c.store_id == STORE, claims.c.claim_id.in_(CLAIM_IDS))
_TAKE_STOCK = (
    update(items)
    .where(items.c.store_id == STORE, items.c.item_id == ITEM, items.c.stock >= QUANTITY)
    .values(stock=items.c.stock - QUANTITY, updated_at=NOW)
    .returning(items.c.stock)
)
_USE_PRIZES = (
    update(claims)
    .where(
        claims.c.store_id == STORE,
        claims.c.claim_id.in_(CLAIM_IDS),
        claims.c.consumer_id == CONSUMER,
        claims.c.state == str(ClaimState.HELD),
        claims.c.expires_at > NOW,
    )
    .values(state=str(ClaimState.USED), used_purchase_id=bindparam("purchase"), settled_at=NOW)
    .returning(claims.c.claim_id)
)
# The values come from the parameters, every column named; the row comes back as written.
_RECORD = insert(purchases).returning(*purchases.c)
# On SQLite these run on the driver, compiled once (``sqlite_driver``; the IN lists of the prizes' two
# statements keep them on SQLAlchemy's path).
_ORDER = {shape: on_driver(statement) for shape, statement in _ORDER.items()}
_STOCK, _EARLIER, _TAKE_STOCK, _RECORD = map(on_driver, (_STOCK, _EARLIER, _TAKE_STOCK, _RECORD))


class OrderRepository:
    """Pricing and buying in the caller's transaction (``Database.read``/``write``; one store)."""

    def __init__(self, connection: Statements, rules: Rules, now: datetime) -> None:
        self.connection = connection
        self.rules = rules
        self.now = now

    def _params(self, store_id: str, consumer_id: str, order: OrderInput, request_id: str = "") -> dict[str, Any]:
        return {
            "store": store_id,
            "item": order.item_id,
            "sale": order.flash_sale_id,
            "consumer": consumer_id,
            "request": request_id,
            "quantity": order.quantity,
            "now": self.now,
        }

    async def quote(self, store_id: str, consumer_id: str, order: OrderInput, *, group_member: bool) -> Quote:
        """Every rule an order meets, read without taking stock: the same for PriceOrder and Purchase.

        SKUs are not modelled: a sale outside a flash sale is priced at the item's
        lowest price (one price for single-price items; the order system prices a
        SKU of a price-range item itself).
        """
        params = self._params(store_id, consumer_id, order)
        row = await self._order_row(params, buying=False)
        if row is None:
            raise await self._missing(params)
        return await self._quote(row, params, order, group_member)

    async def purchase(
        self, request_id: str, store_id: str, consumer_id: str, order: OrderInput, *, group_member: bool
    ) -> PurchaseOutcome:
        """Stock taken, prizes used and the purchase written in this one transaction (M2)."""
        params = self._params(store_id, consumer_id, order, request_id)
        fingerprint = purchase_fingerprint(consumer_id, order)
        row = await self._order_row(params, buying=True)
        if row is None or row.request_used:
            earlier = await self._earlier(params)
            if earlier is not None:
                return _replayed(earlier, fingerprint)
        if row is None:
            raise await self._missing(params)
        try:
            quote = await self._quote(row, params, order, group_member)
            if quote.failures:
                raise RuleRefusal(quote.failures)
            stock_left = await self._take_stock(params)
        except RuleRefusal:
            # A retry racing its original: the original may have taken the last unit and committed since
            # the read above. The caller gets that purchase, not "sold out" (nothing was written yet).
            earlier = await self._earlier(params)
            if earlier is not None:
                return _replayed(earlier, fingerprint)
            raise
        purchase_id = new_id("pur")
        await self._use_prizes(params, purchase_id, order)  # a refusal here rolls the stock back
        recorded = await self._record_purchase(purchase_id, params, order, quote, fingerprint)
        return PurchaseOutcome(recorded, stock_left, replayed=False)

    async def _order_row(self, params: dict[str, Any], *, buying: bool) -> Row[Any] | None:
        statement = _ORDER[bool(params["sale"]), buying]
        return (await self.connection.execute(statement, params)).first()

    async def _missing(self, params: dict[str, Any]) -> NotFound:
        """Which of the item and the sale the order names does not exist (the item first)."""
        if (await self.connection.execute(_STOCK, params)).first() is None:
            return NotFound("item", f"{params['store']}/{params['item']}")
        return NotFound("activity", f"{params['store']}/{params['sale']}")

    async def _earlier(self, params: dict[str, Any]) -> Row[Any] | None:
        return (await self.connection.execute(_EARLIER, params)).first()

    async def _quote(self, row: Row[Any], params: dict[str, Any], order: OrderInput, group_member: bool) -> Quote:
        item = domain.ItemFacts(Platform(row.platform), row.sku_count, row.price_min_fen, row.price_max_fen, row.stock)
        failures: list[Failure] = []
        flash_price: int | None = None
        if order.flash_sale_id:
            failures += self._sale_failures(row, order, item, group_member)
            flash_price = row.price_fen
        cash, coupons, prize_failures = await self._order_prizes(params, order)
        failures += prize_failures
        failures += domain.order_count_failures(self.rules, len(order.cash_red_packet_ids), len(order.store_coupon_ids))
        failures += domain.stock_failures(item.stock, order.quantity)
        pricing = domain.price_order(
            item_price_fen=item.price_min_fen,
            flash_price_fen=flash_price,
            quantity=order.quantity,
            cash_red_packets=cash,
            store_red_packets=order.store_red_packet_fen,
            store_coupons=coupons,
        )
        records = domain.price_records(item.platform) if order.flash_sale_id else ()
        return Quote(item.stock, pricing, records, failures)

    def _sale_failures(
        self, sale: Row[Any], order: OrderInput, item: domain.ItemFacts, group_member: bool
    ) -> list[Failure]:
        """M1, M5 and M6 for the flash sale the order names; a sale of another kind or item is the caller's error."""
        sale_id = order.flash_sale_id
        if sale.kind != ActivityKind.FLASH_SALE:
            raise InvalidArgument.one("order.flash_sale_id", f"{sale_id} is a {sale.kind}, not a flash sale")
        if sale.sale_item_id != order.item_id:
            raise InvalidArgument.one(
                "order.flash_sale_id", f"flash sale {sale_id} sells {sale.sale_item_id}, not {order.item_id}"
            )
        failures = domain.membership_failures(ActivityKind.FLASH_SALE, group_member)
        failures += domain.flash_sale_item_failures(item)
        ended_at = sale.ended_at or (sale.ends_at if sale.end_card_posted else None)
        window = domain.Window(sale.starts_at, sale.ends_at)
        failures += domain.running_failures(ActivityKind.FLASH_SALE, window, ended_at, self.now)
        return failures

    async def _order_prizes(
        self, params: dict[str, Any], order: OrderInput
    ) -> tuple[list[int], list[int], list[Failure]]:
        """The values of the prizes an order applies, and why any of them cannot be used."""
        wanted = order.prize_ids
        if not wanted:
            return [], [], []
        found = (await self.connection.execute(_PRIZES, {**params, "claim_ids": wanted})).all()
        rows = {c.claim_id: c for c in found}
        failures: list[Failure] = []
        values: dict[PrizeKind, list[int]] = {PrizeKind.CASH_RED_PACKET: [], PrizeKind.STORE_COUPON: []}
        for field_name, ids, kind in (
            ("order.cash_red_packet_ids", order.cash_red_packet_ids, PrizeKind.CASH_RED_PACKET),
            ("order.store_coupon_ids", order.store_coupon_ids, PrizeKind.STORE_COUPON),
        ):
            for claim_id in ids:
                claim = rows.get(claim_id)
                if claim is None or claim.consumer_id != params["consumer"]:
                    raise NotFound("claim", claim_id)
                if claim.kind != kind:
                    raise InvalidArgument.one(field_name, f"{claim_id} is a {claim.kind}, not a {kind}")
                values[kind].append(claim.value_fen)
                state = claim_state(claim, self.now)
                if state is ClaimState.USED:
                    used = f"{claim_id} was used in another order"
                    failures.append(Failure("M8", "PRIZE_ALREADY_USED", used, {"claim_id": claim_id}))
                elif state is not ClaimState.HELD:
                    failures.append(
                        Failure(
                            "M9",
                            "PRIZE_EXPIRED",
                            f"{claim_id} expired at {claim.expires_at.isoformat()}",
                            {"claim_id": claim_id, "expires_at": claim.expires_at.isoformat()},
                        )
                    )
        return values[PrizeKind.CASH_RED_PACKET], values[PrizeKind.STORE_COUPON], failures

    async def _take_stock(self, params: dict[str, Any]) -> int:
        """The one guard of M2: a conditional decrement; nothing is taken when the stock is short."""
        left = (await self.connection.execute(_TAKE_STOCK, params)).scalar()
        if left is None:
            current = (await self.connection.execute(_STOCK, params)).scalar()
            raise RuleRefusal(domain.stock_failures(int(current or 0), params["quantity"]))
        return int(left)

    async def _use_prizes(self, params: dict[str, Any], purchase_id: str, order: OrderInput) -> None:
        wanted = order.prize_ids
        if not wanted:
            return
        used = (
            await self.connection.execute(_USE_PRIZES, {**params, "claim_ids": wanted, "purchase": purchase_id})
        ).all()
        if len(used) != len(wanted):
            # Another order or the expiry job took one of them since the quote: nothing of this order stays.
            raise RuleRefusal(
                [Failure("M8", "PRIZE_ALREADY_USED", "a red packet or coupon of this order is no longer available", {})]
            )

    async def _record_purchase(
        self, purchase_id: str, params: dict[str, Any], order: OrderInput, quote: Quote, fingerprint: str
    ) -> Row[Any]:
        """The purchase row; a racing retry's unique (store_id, request_id) fails here."""
        values = {
            "store_id": params["store"],
            "purchase_id": purchase_id,
            "request_id": params["request"],
            "request_fingerprint": fingerprint,
            "consumer_id": params["consumer"],
            "item_id": order.item_id,
            "quantity": order.quantity,
            "flash_sale_id": order.flash_sale_id or None,
            "unit_price_fen": quote.pricing.unit_price_fen,
            "cash_red_packet_fen": quote.pricing.cash_red_packet_fen,
            "store_coupon_fen": quote.pricing.store_coupon_fen,
            "total_fen": quote.pricing.total_fen,
            "cash_red_packet_ids": list(order.cash_red_packet_ids),
            "store_coupon_ids": list(order.store_coupon_ids),
            "price_records": [[str(record), counts] for record, counts in quote.price_records],
            "created_at": self.now,
            "cancelled_at": None,
            "cancel_request_id": None,
        }
        return (await self.connection.execute(_RECORD, values)).one()


def purchase_fingerprint(consumer_id: str, order: OrderInput) -> str:
    """What makes two Purchase requests the same: the buyer and the order (membership is read at each call)."""
    return request_fingerprint(consumer_id=consumer_id, order=order)


def _replayed(earlier: Row[Any], fingerprint: str) -> PurchaseOutcome:
    """The first answer to a repeated request id, with the stock as it is now; another order's id is refused."""
    check_same_request(earlier.request_id, earlier.request_fingerprint, fingerprint, "purchase")
    return PurchaseOutcome(earlier, int(earlier.stock_left), replayed=True)
