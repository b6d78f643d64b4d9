"""Builders for campaigns-service requests, shared by its integration tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import grpc

from qun.campaigns.v1 import campaigns_pb2 as pb
from qun.campaigns.v1 import campaigns_pb2_grpc
from qun.common.v1 import facts_pb2
from services.common.errors import failures_from_status, field_violations, status_from_error
from services.common.timestamps import to_timestamp as ts

Stub = campaigns_pb2_grpc.CampaignsServiceStub
CASH = pb.PRIZE_KIND_CASH_RED_PACKET
COUPON = pb.PRIZE_KIND_STORE_COUPON


def rules_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [f.rule_id for f in failures_from_status(status_from_error(error))]


def reasons_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [f.reason for f in failures_from_status(status_from_error(error))]


def fields_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in field_violations(status_from_error(error))]


async def item(
    stub: Stub,
    store: str,
    item_id: str,
    *,
    stock: int = 10,
    price: int = 10_000,
    high: int | None = None,
    skus: int = 1,
    platform: int = facts_pb2.PLATFORM_TAOBAO,
) -> pb.Item:
    reply = await stub.UpsertItem(
        pb.UpsertItemRequest(
            store_id=store,
            item_id=item_id,
            platform=platform,
            sku_count=skus,
            price_min_fen=price,
            price_max_fen=high or price,
            initial_stock=stock,
        )
    )
    return reply.item


def activity(
    store: str,
    group: str,
    now: datetime,
    *,
    minutes: int = 60,
    start: timedelta = timedelta(0),
    request_id: str = "",
    title: str = "活动",
    **spec: object,
) -> pb.CreateActivityRequest:
    return pb.CreateActivityRequest(
        request_id=request_id,
        store_id=store,
        group_set_id=group,
        created_by="main-1",
        title=title,
        starts_at=ts(now + start),
        ends_at=ts(now + start + timedelta(minutes=minutes)),
        **spec,  # type: ignore[arg-type]
    )


async def flash_sale(
    stub: Stub, store: str, group: str, item_id: str, now: datetime, price: int = 6_000, **kw: object
) -> pb.Activity:
    reply = await stub.CreateActivity(
        activity(store, group, now, flash_sale=pb.FlashSaleSpec(item_id=item_id, flash_price_fen=price), **kw)
    )
    return reply.activity


def pool(kind: int, value: int, count: int, limit: int, expires: datetime) -> pb.PoolSpec:
    return pb.PoolSpec(kind=kind, value_fen=value, count=count, per_user_limit=limit, expires_at=ts(expires))


async def fountain(stub: Stub, store: str, group: str, now: datetime, *pools: pb.PoolSpec, **kw: object) -> pb.Activity:
    reply = await stub.CreateActivity(
        activity(store, group, now, red_packet_fountain=pb.FountainSpec(pools=list(pools)), **kw)
    )
    return reply.activity


async def claim(
    stub: Stub, store: str, fountain_id: str, consumer: str, request_id: str, pool_id: str = ""
) -> pb.Claim:
    reply = await stub.ClaimPrize(
        pb.ClaimPrizeRequest(
            request_id=request_id,
            store_id=store,
            activity_id=fountain_id,
            pool_id=pool_id,
            consumer_id=consumer,
            group_member=True,
        )
    )
    return reply.claim


async def buy(
    stub: Stub,
    store: str,
    item_id: str,
    consumer: str,
    request_id: str,
    quantity: int = 1,
    *,
    flash_sale_id: str = "",
    member: bool = True,
    cash: tuple[str, ...] = (),
    coupons: tuple[str, ...] = (),
) -> pb.PurchaseResponse:
    return await stub.Purchase(
        pb.PurchaseRequest(
            request_id=request_id,
            store_id=store,
            consumer_id=consumer,
            group_member=member,
            order=pb.Order(
                item_id=item_id,
                quantity=quantity,
                flash_sale_id=flash_sale_id,
                cash_red_packet_ids=list(cash),
                store_coupon_ids=list(coupons),
            ),
        )
    )


async def stock(stub: Stub, store: str, item_id: str) -> int:
    return (await stub.GetItem(pb.GetItemRequest(store_id=store, item_id=item_id))).item.stock
