"""Mixed load through the gateway: joins, purchases, push submissions, reviews, dispatch.

Every mutation carries a request id, so a worker that gets UNAVAILABLE (or a
deadline) retries it with the same id: the platform must answer the first
result again and change nothing twice. Every call is recorded with its outcome
and code, for the fault suite's assertions and the soak's report.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import grpc

from gateway.auth import Principal, Role
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import campaigns_pb2 as cpb
from qun.gateway.v1 import campaigns_pb2_grpc, gateway_pb2, push_pb2_grpc
from qun.gateway.v1 import push_pb2 as ppb
from tests.support import facts
from tests.support.stack import GatewayClient, RunningStack, unique

UPSTREAM = Principal("upstream-load", Role.UPSTREAM)
OPS = Principal("ops-load", Role.OPS)
FOLLOW = common_pb2.Threshold(follow=common_pb2.FollowThreshold())
INITIAL_STOCK = 1_000_000
SUBSCRIBERS = 10
CALL_TIMEOUT = 10.0
# Codes a caller may see while processes die and come back; anything else is a defect.
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
RETRY_PAUSE = 0.2
MAX_TRIES = 40


@dataclass
class Call:
    kind: str
    code: grpc.StatusCode
    started: float
    seconds: float


@dataclass
class Op:
    """One logical mutation (one request id), however many times it was sent."""

    kind: str
    request_id: str
    key: tuple[str, ...]
    tries: int = 0
    code: grpc.StatusCode | None = None

    @property
    def acknowledged(self) -> bool:
        return self.code is grpc.StatusCode.OK


@dataclass
class Shop:
    store_id: str
    main_id: str
    group_set_id: str
    item_id: str


@dataclass
class Load:
    running: RunningStack
    gw: GatewayClient
    workers: int = 2
    clock_step: timedelta = timedelta(hours=25)
    clock_every: float = 5.0
    calls: list[Call] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    shops: list[Shop] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    keep_calls: bool = True
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (start, seconds, code) of every call, for percentiles over time.
    latencies: list[tuple[float, float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.campaigns = campaigns_pb2_grpc.CampaignServiceStub(self.gw.channel)
        self.push = push_pb2_grpc.PushServiceStub(self.gw.channel)

    # -- one call, recorded ----------------------------------------------------------------------

    async def call(self, kind: str, coro_factory) -> tuple[grpc.StatusCode, object]:  # type: ignore[no-untyped-def]
        start = time.monotonic()
        try:
            reply = await coro_factory()
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            reply, code = error, error.code()
        seconds = time.monotonic() - start
        self.codes[(kind, code.name)] += 1
        self.latencies.append((start, seconds, code.name))
        if self.keep_calls:
            self.calls.append(Call(kind, code, start, seconds))
        return code, reply

    async def until_done(self, kind: str, coro_factory, op: Op | None = None):  # type: ignore[no-untyped-def]
        """Sends until an answer that is not transient; the same request each time."""
        code, reply = grpc.StatusCode.UNAVAILABLE, None
        for _ in range(MAX_TRIES):
            if op is not None:
                op.tries += 1
            code, reply = await self.call(kind, coro_factory)
            if code not in TRANSIENT:
                break
            await asyncio.sleep(RETRY_PAUSE)
        if op is not None:
            op.code = code
        return code, reply

    # -- setup -----------------------------------------------------------------------------------

    async def open_shop(self) -> Shop:
        store_id, main_id = unique("s"), unique("m")
        await self.gw.report(facts.store(store_id, main_id, self.running.now))
        owner = self.gw.auth(self.gw.main_account(main_id, store_id))
        group = await self.gw.groups.CreateGroupSet(
            gateway_pb2.CreateGroupSetRequest(
                request_id=unique("cg"), kind=common_pb2.GROUP_KIND_STORE, name="粉丝群", threshold=FOLLOW
            ),
            metadata=owner,
            timeout=CALL_TIMEOUT,
        )
        item_id = unique("i")
        await self.campaigns.ReportItem(
            cpb.ReportItemRequest(
                store_id=store_id,
                item_id=item_id,
                platform=facts_pb2.PLATFORM_TAOBAO,
                sku_count=1,
                price_min_fen=1000,
                price_max_fen=1000,
                initial_stock=INITIAL_STOCK,
            ),
            metadata=self.gw.auth(UPSTREAM),
            timeout=CALL_TIMEOUT,
        )
        shop = Shop(store_id, main_id, group.group_set.group_set_id, item_id)
        self.shops.append(shop)
        return shop

    # -- the flows -------------------------------------------------------------------------------

    async def report(self, batch: list[facts_pb2.Fact]) -> bool:
        code, _ = await self.until_done(
            "report",
            lambda: self.gw.facts.ReportFacts(
                gateway_pb2.ReportFactsRequest(facts=batch), metadata=self.gw.auth(UPSTREAM), timeout=CALL_TIMEOUT
            ),
        )
        return code is grpc.StatusCode.OK

    async def join_one(self, shop: Shop) -> None:
        consumer = unique("c")
        if not await self.report(facts.consumer(consumer, follows=(shop.store_id,))):
            return
        op = Op("join", unique("j"), (shop.group_set_id, consumer))
        self.ops.append(op)
        request = gateway_pb2.JoinGroupSetRequest(request_id=op.request_id, group_set_id=shop.group_set_id)
        meta = self.gw.auth(self.gw.consumer(consumer))
        await self.until_done(
            "join", lambda: self.gw.groups.JoinGroupSet(request, metadata=meta, timeout=CALL_TIMEOUT), op
        )

    async def buy_one(self, shop: Shop) -> None:
        consumer = unique("c")
        op = Op("purchase", unique("b"), (shop.store_id, shop.item_id))
        self.ops.append(op)
        request = cpb.PurchaseRequest(
            request_id=op.request_id, store_id=shop.store_id, order=cpb.Order(item_id=shop.item_id, quantity=1)
        )
        meta = self.gw.auth(self.gw.consumer(consumer))
        await self.until_done(
            "purchase", lambda: self.campaigns.Purchase(request, metadata=meta, timeout=CALL_TIMEOUT), op
        )

    async def push_one(self) -> None:
        """A fresh content account with ten subscribers submits a push; ops approve it."""
        store_id, main_id = unique("s"), unique("m")
        batch = facts.store(store_id, main_id, self.running.now, orders=0, level=None)
        batch += [
            facts_pb2.Fact(
                push_subscription=facts_pb2.PushSubscriptionFact(
                    store_id=store_id, consumer_id=f"{store_id}-sub{i}", subscribed=True
                )
            )
            for i in range(SUBSCRIBERS)
        ]
        if not await self.report(batch):
            return
        op = Op("push", unique("p"), (store_id,))
        self.ops.append(op)
        main = self.gw.auth(self.gw.main_account(main_id, store_id))
        request = ppb.SubmitPushRequest(
            request_id=op.request_id, kind=ppb.PUSH_KIND_SUBSCRIPTION, title="上新", body="春季新品"
        )
        code, reply = await self.until_done(
            "submit", lambda: self.push.SubmitPush(request, metadata=main, timeout=CALL_TIMEOUT), op
        )
        if code is not grpc.StatusCode.OK:
            return
        push_id = reply.push.push_id  # type: ignore[union-attr]
        review = Op("review", "", (store_id, push_id))
        self.ops.append(review)
        code, reply = await self.until_done(
            "review",
            lambda: self.push.ReviewPush(
                ppb.ReviewPushRequest(push_id=push_id, decision=ppb.REVIEW_DECISION_APPROVE),
                metadata=self.gw.auth(OPS),
                timeout=CALL_TIMEOUT,
            ),
            review,
        )
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            # An approval that landed before its answer was lost: the retry finds it decided.
            code, got = await self.until_done(
                "get_push",
                lambda: self.push.GetPush(ppb.GetPushRequest(push_id=push_id), metadata=main, timeout=CALL_TIMEOUT),
            )
            if code is grpc.StatusCode.OK and got.push.state in (  # type: ignore[union-attr]
                ppb.PUSH_STATE_APPROVED,
                ppb.PUSH_STATE_SENDING,
                ppb.PUSH_STATE_SENT,
            ):
                review.code = grpc.StatusCode.OK

    async def worker(self, n: int) -> None:
        rng = random.Random(n)
        while not self.stop.is_set():
            shop = rng.choice(self.shops)
            roll = rng.random()
            if roll < 0.45:
                await self.join_one(shop)
            elif roll < 0.85:
                await self.buy_one(shop)
            else:
                await self.push_one()

    async def clock(self) -> None:
        """Moves every process's clock a day on, so approved pushes fall due and dispatch."""
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), self.clock_every)
            except TimeoutError:
                self.running.set_time(self.running.now + self.clock_step)

    async def run(self, shops: int = 2) -> list[asyncio.Task[None]]:
        for _ in range(shops):
            await self.open_shop()
        tasks = [asyncio.create_task(self.worker(n)) for n in range(self.workers)]
        tasks.append(asyncio.create_task(self.clock()))
        return tasks

    # -- figures ---------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        mutations = [op for op in self.ops if op.kind in ("join", "purchase", "push")]
        return {
            "sent": sum(op.tries for op in mutations),
            "requests": len(mutations),
            "acknowledged": sum(op.acknowledged for op in mutations),
            "reviews_acknowledged": sum(op.acknowledged for op in self.ops if op.kind == "review"),
            "calls": sum(self.codes.values()),
        }
