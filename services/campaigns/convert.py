"""Between the wire and the domain: rows to proto messages, proto enums to domain enums."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row

from qun.campaigns.v1 import campaigns_pb2 as pb
from qun.common.v1 import facts_pb2
from services.campaigns import rules as domain
from services.campaigns.kinds import DECLARATIONS, PRIZE_FROM_PROTO, ActivityKind, declaration
from services.campaigns.models import Claim, EndCard, Pool, Purchase, Refund, Trumpet
from services.campaigns.models import Item as ItemRow
from services.campaigns.refunds import REFUND_EXPIRED_RED_PACKET
from services.campaigns.repository import ActivityView, claim_state, has_ended
from services.campaigns.rules import ClaimState, Platform, PriceRecord, PrizeKind
from services.common.timestamps import to_timestamp

PLATFORM_FROM_PROTO = {facts_pb2.PLATFORM_TAOBAO: Platform.TAOBAO, facts_pb2.PLATFORM_TMALL: Platform.TMALL}
PLATFORM_TO_PROTO = {v: k for k, v in PLATFORM_FROM_PROTO.items()}
# Each declared kind by its value in the contract (``kinds``: ``ACTIVITY_KIND_<NAME>``).
KIND_TO_PROTO = {d.kind: pb.ActivityKind.Value(d.proto_name) for d in DECLARATIONS}
PRIZE_TO_PROTO = {v: k for k, v in PRIZE_FROM_PROTO.items()}
CLAIM_STATE_TO_PROTO = {
    ClaimState.HELD: pb.CLAIM_STATE_HELD,
    ClaimState.USED: pb.CLAIM_STATE_USED,
    ClaimState.REFUNDED: pb.CLAIM_STATE_REFUNDED,
    ClaimState.EXPIRED: pb.CLAIM_STATE_EXPIRED,
}
RECORD_TO_PROTO = {
    PriceRecord.MARKET_30_DAY: pb.LOWEST_PRICE_RECORD_MARKET_30_DAY,
    PriceRecord.HISTORICAL: pb.LOWEST_PRICE_RECORD_HISTORICAL,
    PriceRecord.PROMOTIONAL_30_DAY: pb.LOWEST_PRICE_RECORD_PROMOTIONAL_30_DAY,
    PriceRecord.JUHUASUAN: pb.LOWEST_PRICE_RECORD_JUHUASUAN,
    PriceRecord.TAOQIANGGOU: pb.LOWEST_PRICE_RECORD_TAOQIANGGOU,
}


def item_to_proto(row: ItemRow) -> pb.Item:
    return pb.Item(
        store_id=row.store_id,
        item_id=row.item_id,
        platform=PLATFORM_TO_PROTO[Platform(row.platform)],
        sku_count=row.sku_count,
        price_min_fen=row.price_min_fen,
        price_max_fen=row.price_max_fen,
        stock=row.stock,
        updated_at=to_timestamp(row.updated_at),
    )


def pool_to_proto(row: Pool) -> pb.Pool:
    return pb.Pool(
        pool_id=row.pool_id,
        kind=PRIZE_TO_PROTO[PrizeKind(row.kind)],
        value_fen=row.value_fen,
        count=row.count,
        remaining=row.remaining,
        per_user_limit=row.per_user_limit,
        expires_at=to_timestamp(row.expires_at),
    )


def activity_to_proto(view: ActivityView, now: datetime) -> pb.Activity:
    row = view.activity
    kind = ActivityKind(row.kind)
    msg = pb.Activity(
        store_id=row.store_id,
        activity_id=row.activity_id,
        group_set_id=row.group_set_id,
        kind=KIND_TO_PROTO[kind],
        title=row.title,
        starts_at=to_timestamp(row.starts_at),
        ends_at=to_timestamp(row.ends_at),
        created_by=row.created_by,
        created_at=to_timestamp(row.created_at),
        item_id=row.item_id or "",
        price_fen=row.price_fen or 0,
        group_size=row.group_size or 0,
        options=list(row.options or []),
        pools=[pool_to_proto(p) for p in view.pools],
        running=row.starts_at <= now and not has_ended(row, now),
        members_only=declaration(kind).members_only,
    )
    if row.ended_at is not None:
        msg.ended_at.CopyFrom(to_timestamp(row.ended_at))
    return msg


def trumpet_to_proto(row: Trumpet) -> pb.Trumpet:
    return pb.Trumpet(
        store_id=row.store_id,
        trumpet_id=row.trumpet_id,
        activity_id=row.activity_id,
        group_set_id=row.group_set_id,
        sub_group_id=row.sub_group_id,
        message=row.message,
        display_starts_at=to_timestamp(row.display_starts_at),
        created_by=row.created_by,
        created_at=to_timestamp(row.created_at),
    )


def pricing_to_proto(pricing: domain.Pricing) -> pb.OrderPrice:
    return pb.OrderPrice(
        unit_price_fen=pricing.unit_price_fen,
        subtotal_fen=pricing.subtotal_fen,
        cash_red_packet_fen=pricing.cash_red_packet_fen,
        store_red_packet_fen=pricing.store_red_packet_fen,
        store_coupon_fen=pricing.store_coupon_fen,
        total_fen=pricing.total_fen,
        flash_price=pricing.flash_price,
    )


def records_to_proto(records: list[list[object]] | tuple[tuple[PriceRecord, bool], ...]) -> list[pb.PriceRecordEffect]:
    return [
        pb.PriceRecordEffect(record=RECORD_TO_PROTO[PriceRecord(str(record))], counts=bool(counts))
        for record, counts in records
    ]


def purchase_to_proto(row: Purchase | Row[Any]) -> pb.PurchaseRecord:
    """A purchase as the ORM loads it or as ``orders`` reads and writes it (a row of ``purchases``)."""
    msg = pb.PurchaseRecord(
        store_id=row.store_id,
        purchase_id=row.purchase_id,
        request_id=row.request_id,
        consumer_id=row.consumer_id,
        item_id=row.item_id,
        quantity=row.quantity,
        flash_sale_id=row.flash_sale_id or "",
        price=pb.OrderPrice(
            unit_price_fen=row.unit_price_fen,
            subtotal_fen=row.unit_price_fen * row.quantity,
            cash_red_packet_fen=row.cash_red_packet_fen,
            store_coupon_fen=row.store_coupon_fen,
            total_fen=row.total_fen,
            flash_price=row.flash_sale_id is not None,
        ),
        cash_red_packet_ids=list(row.cash_red_packet_ids),
        store_coupon_ids=list(row.store_coupon_ids),
        price_records=records_to_proto(row.price_records),
        created_at=to_timestamp(row.created_at),
    )
    if row.cancelled_at is not None:
        msg.cancelled_at.CopyFrom(to_timestamp(row.cancelled_at))
    return msg


def claim_to_proto(row: Claim, now: datetime) -> pb.Claim:
    return pb.Claim(
        store_id=row.store_id,
        claim_id=row.claim_id,
        activity_id=row.activity_id,
        pool_id=row.pool_id,
        consumer_id=row.consumer_id,
        kind=PRIZE_TO_PROTO[PrizeKind(row.kind)],
        value_fen=row.value_fen,
        state=CLAIM_STATE_TO_PROTO[claim_state(row, now)],
        expires_at=to_timestamp(row.expires_at),
        used_in_purchase_id=row.used_purchase_id or "",
        claimed_at=to_timestamp(row.claimed_at),
    )


def end_card_to_proto(row: EndCard) -> pb.EndCard:
    return pb.EndCard(
        store_id=row.store_id,
        seq=row.seq,
        activity_id=row.activity_id,
        group_set_id=row.group_set_id,
        title=row.title,
        item_id=row.item_id,
        units_sold=row.units_sold,
        purchases=row.purchases,
        ended_at=to_timestamp(row.ended_at),
        posted_at=to_timestamp(row.posted_at),
    )


def refund_to_proto(row: Refund) -> pb.Refund:
    return pb.Refund(
        store_id=row.store_id,
        refund_id=row.refund_id,
        source=pb.REFUND_SOURCE_EXPIRED_RED_PACKET
        if row.source == REFUND_EXPIRED_RED_PACKET
        else pb.REFUND_SOURCE_UNCLAIMED_POOL,
        source_id=row.source_id,
        activity_id=row.activity_id,
        amount_fen=row.amount_fen,
        created_at=to_timestamp(row.created_at),
    )
