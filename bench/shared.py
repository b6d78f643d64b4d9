"""What the benchmark's rows share: the row itself, the calls they drive, and data made through the API.

``Seeder`` reports facts and creates group-sets through the gateway, as an
upstream system and a merchant would; ``postgres_database`` gives a row a
database of its own on the server ``TEST_DATABASE_URL`` names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import make_url

from bench.loadgen import Call
from cli import facts
from gateway.auth import Principal, Role, mint_token
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import campaigns_pb2, campaigns_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from services.common.rules import load_rules

JOIN_METHOD = "/qun.gateway.v1.GroupService/JoinGroupSet"
PURCHASE_METHOD = "/qun.gateway.v1.CampaignService/Purchase"
FOLLOW = common_pb2.Threshold(follow=common_pb2.FollowThreshold())


@dataclass
class Row:
    name: str
    figure: str
    target: str
    met: bool | None
    detail: dict[str, Any] = field(default_factory=dict)


def join_call(secret: str, consumer_id: str, group_set_id: str) -> Call:
    token = mint_token(secret, Principal(consumer_id, Role.CONSUMER), ttl_seconds=3600)
    request = gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id).SerializeToString()
    return Call(JOIN_METHOD, request, (("authorization", f"Bearer {token}"),))


def purchase_call(secret: str, consumer_id: str, store_id: str, item_id: str, sale_id: str, request_id: str) -> Call:
    token = mint_token(secret, Principal(consumer_id, Role.CONSUMER), ttl_seconds=3600)
    request = campaigns_pb2.PurchaseRequest(
        request_id=request_id,
        store_id=store_id,
        order=campaigns_pb2.Order(item_id=item_id, quantity=1, flash_sale_id=sale_id),
    ).SerializeToString()
    return Call(PURCHASE_METHOD, request, (("authorization", f"Bearer {token}"),))


class Seeder:
    """Reports facts and creates group-sets through the gateway, as an upstream system and a merchant would."""

    BATCH = 900

    def __init__(self, gateway: str, secret: str) -> None:
        self.channel = grpc.insecure_channel(gateway)
        self.facts = gateway_pb2_grpc.FactServiceStub(self.channel)
        self.groups = gateway_pb2_grpc.GroupServiceStub(self.channel)
        self.campaigns = campaigns_pb2_grpc.CampaignServiceStub(self.channel)
        self.secret = secret
        self.run = uuid.uuid4().hex[:6]
        self.mains: dict[str, str] = {}  # each store's main account, who runs its activities

    def auth(self, principal: Principal) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {mint_token(self.secret, principal)}"),)

    def report(self, reported: list[Any]) -> None:
        for start in range(0, len(reported), self.BATCH):
            self.facts.ReportFacts(
                gateway_pb2.ReportFactsRequest(facts=reported[start : start + self.BATCH]),
                metadata=self.auth(Principal("bench", Role.UPSTREAM)),
                timeout=60,
            )

    def store_with_groups(self, label: str, sets: int) -> tuple[str, list[str]]:
        store_id, main_id = self.new_store(label)
        return store_id, self.group_sets(store_id, main_id, sets)

    def new_store(self, label: str, *, orders: int = 30) -> tuple[str, str]:
        """A store that may create groups (E2), and its main account."""
        store_id, main_id = f"{label}-{self.run}", f"{label}-main-{self.run}"
        self.mains[store_id] = main_id
        self.report(facts.store(store_id, main_id, datetime.now(UTC), orders=orders))
        return store_id, main_id

    def set_level(self, store_id: str, level: int) -> None:
        """The store's group level this month, as ops set it (T2: L4 holds ten sets and 50,000 members)."""
        self.groups.SetGroupLevel(
            gateway_pb2.SetGroupLevelRequest(
                store_id=store_id, month=load_rules().calendar.market.month_key(datetime.now(UTC)), level=level
            ),
            metadata=self.auth(Principal("bench-ops", Role.OPS)),
            timeout=30,
        )

    def group_sets(self, store_id: str, main_id: str, count: int) -> list[str]:
        owner = self.auth(Principal(main_id, Role.STORE_MAIN, store_id))
        return [
            self.groups.CreateGroupSet(
                gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name=f"群{i}", threshold=FOLLOW),
                metadata=owner,
                timeout=30,
            ).group_set.group_set_id
            for i in range(count)
        ]

    def join(self, consumer_id: str, group_set_id: str) -> None:
        self.groups.JoinGroupSet(
            gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id),
            metadata=self.auth(Principal(consumer_id, Role.CONSUMER)),
            timeout=30,
        )

    def flash_sale(self, store_id: str, group_set_id: str, item_id: str, stock: int) -> str:
        upstream = self.auth(Principal("bench", Role.UPSTREAM))
        self.campaigns.ReportItem(
            campaigns_pb2.ReportItemRequest(
                store_id=store_id,
                item_id=item_id,
                platform=facts_pb2.PLATFORM_TAOBAO,
                sku_count=1,
                price_min_fen=10_000,
                price_max_fen=10_000,
                initial_stock=stock,
            ),
            metadata=upstream,
            timeout=30,
        )
        now = datetime.now(UTC)
        starts, ends = Timestamp(), Timestamp()
        starts.FromDatetime(now - timedelta(minutes=1))
        ends.FromDatetime(now + timedelta(hours=1))
        main_id = self.mains[store_id]
        created = self.campaigns.CreateActivity(
            campaigns_pb2.CreateActivityRequest(
                group_set_id=group_set_id,
                title="秒杀",
                starts_at=starts,
                ends_at=ends,
                flash_sale=campaigns_pb2.FlashSaleSpec(item_id=item_id, flash_price_fen=6_000),
            ),
            metadata=self.auth(Principal(main_id, Role.STORE_MAIN, store_id)),
            timeout=30,
        )
        return str(created.activity.activity_id)

    def stock_and_sold(self, store_id: str, item_id: str) -> tuple[int, int]:
        upstream = self.auth(Principal("bench", Role.UPSTREAM))
        item = self.campaigns.GetItem(
            campaigns_pb2.GetItemRequest(store_id=store_id, item_id=item_id), metadata=upstream
        )
        sold, token = 0, ""
        while True:
            page = self.campaigns.ListSales(
                campaigns_pb2.ListSalesRequest(store_id=store_id, item_id=item_id, page_size=500, page_token=token),
                metadata=upstream,
            )
            sold += sum(p.quantity for p in page.purchases if not p.HasField("cancelled_at"))
            token = page.next_page_token
            if not token:
                return int(item.item.stock), sold

    def consumers(
        self, label: str, count: int, *, follows: str = "", real_name: bool = True, score: int = 600
    ) -> list[str]:
        ids = [f"{label}{self.run}-{i}" for i in range(count)]
        reported = [
            fact
            for c in ids
            for fact in facts.consumer(c, score=score, real_name=real_name, follows=(follows,) if follows else ())
        ]
        self.report(reported)
        return ids


def postgres_reachable() -> bool:
    """Whether the server ``TEST_DATABASE_URL`` names answers."""
    server = make_url(os.environ.get("TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")).set(
        drivername="postgresql"
    )

    async def ping() -> None:
        conn = await asyncpg.connect(server.render_as_string(hide_password=False), timeout=3)
        await conn.close()

    try:
        asyncio.run(ping())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


@contextlib.contextmanager
def postgres_database(label: str) -> Iterator[str]:
    server = make_url(os.environ.get("TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")).set(
        drivername="postgresql"
    )
    name = f"qun_bench_{label}_{uuid.uuid4().hex[:8]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(server.render_as_string(hide_password=False))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
