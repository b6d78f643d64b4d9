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
from services.common.messages import message_from

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
    return message_from(pb.Item, row, platform=PLATFORM_TO_PROTO[Platform(row.platform)])


def pool_to_proto(row: Pool) -> pb.Pool:
    return message_from(pb.Pool, row, kind=PRIZE_TO_PROTO[PrizeKind(row.kind)])


def activity_to_proto(view: ActivityView, now: datetime) -> pb.Activity:
    row = view.activity
    kind = ActivityKind(row.kind)
    return message_from(
        pb.Activity,
        row,
        kind=KIND_TO_PROTO[kind],
        pools=[pool_to_proto(p) for p in view.pools],
        running=row.starts_at <= now and not has_ended(row, now),
        members_only=declaration(kind).members_only,
    )


def trumpet_to_proto(row: Trumpet) -> pb.Trumpet:
    return message_from(pb.Trumpet, row)


def pricing_to_proto(pricing: domain.Pricing) -> pb.OrderPrice:
    return message_from(pb.OrderPrice, pricing)


def records_to_proto(records: list[list[object]] | tuple[tuple[PriceRecord, bool], ...]) -> list[pb.PriceRecordEffect]:
    return [
        pb.PriceRecordEffect(record=RECORD_TO_PROTO[PriceRecord(str(record))], counts=bool(counts))
        for record, counts in records
    ]


def purchase_to_proto(row: Purchase | Row[Any]) -> pb.PurchaseRecord:
    """A purchase as the ORM loads it or as ``orders`` reads and writes it (a row of ``purchases``)."""
    return message_from(
        pb.PurchaseRecord,
        row,
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
    )


def claim_to_proto(row: Claim, now: datetime) -> pb.Claim:
    return message_from(
        pb.Claim,
        row,
        kind=PRIZE_TO_PROTO[PrizeKind(row.kind)],
        state=CLAIM_STATE_TO_PROTO[claim_state(row, now)],
        used_in_purchase_id=row.used_purchase_id,
    )


def end_card_to_proto(row: EndCard) -> pb.EndCard:
    return message_from(pb.EndCard, row)


def refund_to_proto(row: Refund) -> pb.Refund:
    return message_from(
        pb.Refund,
        row,
        source=pb.REFUND_SOURCE_EXPIRED_RED_PACKET
        if row.source == REFUND_EXPIRED_RED_PACKET
        else pb.REFUND_SOURCE_UNCLAIMED_POOL,
    )
