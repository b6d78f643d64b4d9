"""Requests as the campaigns service accepts them: each validated whole into the value its unit of work takes.

Input is checked field by field before anything touches the database: one
INVALID_ARGUMENT names every bad field. An activity's own spec is checked by
its kind's validator (``kinds``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from qun.campaigns.v1 import campaigns_pb2 as pb
from qun.common.v1 import facts_pb2
from services.campaigns import kinds
from services.campaigns import rules as domain
from services.campaigns.activities import NewActivity, NewTrumpet
from services.campaigns.convert import PLATFORM_FROM_PROTO
from services.campaigns.items import ItemUpdate
from services.campaigns.orders import OrderInput
from services.common.rules import GROUP_LEVELS, BoundsRules
from services.common.validation import MAX_NAME_CHARS, Fields

MAX_MESSAGE_CHARS = 200
# Every other upper bound is the rules file's ``[bounds]`` (SPEC D2): the same numbers the gateway checks,
# chosen so the sums and products below fit a signed 64-bit integer (``OVERFLOW_GUARDS``). A list longer
# than ``bounds.order_entries`` is malformed input, not a rule's business (M8 refuses anything past 10).


def item_update(request: pb.UpsertItemRequest, bounds: BoundsRules) -> ItemUpdate:
    """An item's facts from upstream; a new item's stock at most ``bounds.stock`` (D2)."""
    f = Fields()
    f.identifier("store_id", request.store_id)
    f.identifier("item_id", request.item_id)
    platform = f.enum("platform", request.platform, facts_pb2.Platform, allowed=tuple(PLATFORM_FROM_PROTO))
    f.within_bound("sku_count", request.sku_count, bounds, "skus_per_item")
    f.within_bound("price_min_fen", request.price_min_fen, bounds, "money_fen")
    f.within_bound("price_max_fen", request.price_max_fen, bounds, "money_fen")
    if 0 < request.price_max_fen < request.price_min_fen:
        f.fail("price_max_fen", f"must be at least price_min_fen ({request.price_min_fen})")
    if not 0 <= request.initial_stock <= bounds.stock:
        f.fail("initial_stock", f"must be between 0 and {bounds.stock:,} (bounds.stock), got {request.initial_stock:,}")
    f.done()
    return ItemUpdate(
        store_id=request.store_id,
        item_id=request.item_id,
        platform=PLATFORM_FROM_PROTO[platform],
        sku_count=request.sku_count,
        price_min_fen=request.price_min_fen,
        price_max_fen=request.price_max_fen,
        initial_stock=request.initial_stock,
    )


def new_activity(request: pb.CreateActivityRequest, bounds: BoundsRules, now: datetime) -> NewActivity:
    """The fields every kind has, then the kind's own spec (its declaration's validator)."""
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
        elif ends_at <= now:
            f.fail("ends_at", "must be in the future")
    declared = kinds.of_spec(request.WhichOneof("spec"))
    if declared is None:
        f.fail("spec", "required: one of " + ", ".join(d.spec for d in kinds.DECLARATIONS))
    f.done()
    assert declared is not None and starts_at is not None and ends_at is not None
    kind = declared.kind
    f = Fields()  # the kind's own spec, checked once the fields every kind has are sound
    spec = declared.validate(f, getattr(request, declared.spec), bounds, starts_at)
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


def new_trumpet(request: pb.CreateTrumpetRequest) -> NewTrumpet:
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
    return NewTrumpet(
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


def _ids(f: Fields, name: str, values: Iterable[str], most: int) -> tuple[str, ...]:
    out: list[str] = []
    items = list(values)
    if len(items) > most:
        f.fail(name, f"at most {most} entries (bounds.order_entries), got {len(items)}")
        return ()
    for i, value in enumerate(items):
        f.identifier(f"{name}[{i}]", value)
        if value in out:
            f.fail(f"{name}[{i}]", f"{value} is listed twice")
        out.append(value)
    return tuple(out)


def order_input(f: Fields, msg: pb.Order, present: bool, bounds: BoundsRules, *, purchase: bool) -> OrderInput:
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
