"""SPEC M2, M9, M10, M11 with two real replicas of the campaigns service on one PostgreSQL.

Two ``python -m services.campaigns`` processes share a database (and a clock
file, so the test can move their time) and take thousands of concurrent calls
between them:

- stock (M2): ~2,000 purchase attempts against a stock of 50, flash-sale and
  normal sales mixed, some request ids sent to both replicas at once;
- activities at once (M11): 40 concurrent creations in one group-set;
- claims (M10): consumers claiming in bursts, where the wallet size binds in
  one store and the per-user limit in another;
- the expiry job (M9): both replicas' timers plus RunExpiry called on both at
  once, over the expired packets of every store.

Afterwards the database must show exactly what the caps allow: the stock sold
exactly, never below zero, one purchase row per success, each retry answered
with its original, ten activities, every wallet and limit exact, each packet
refunded once. All scenarios share one pair of replicas (one test) so a
parallel test run holds one pair's connections, not several.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from qun.campaigns.v1 import campaigns_pb2 as pb
from services.common.client import internal_channel
from services.common.clock import FileClock
from tests.integration.campaigns.helpers import CASH, COUPON, Stub, activity, item, pool
from tests.support import postgres
from tests.support.inprocess import INTERNAL_TOKEN
from tests.support.replicas import Replica, replicas

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
STOCK = 50
WALLET = 3
RULES_TOML = f"[campaigns]\nwallet_size = {WALLET}\n"


@dataclass
class Cluster:
    replicas: list[Replica]
    url: str
    clock_file: Path

    def set_time(self, when: datetime) -> None:
        FileClock.write(self.clock_file, when)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with postgres.fresh_database("campaigns") as url:
        rules_file = tmp_path / "rules.toml"
        rules_file.write_text(RULES_TOML)
        clock_file = tmp_path / "clock"
        FileClock.write(clock_file, T0)
        env = {
            "QUN_RULES_FILE": str(rules_file),
            "QUN_CLOCK_FILE": str(clock_file),
            "QUN_JOB_INTERVAL_SECONDS": "0.1",  # both timers race the RunExpiry calls
        }
        with replicas("campaigns", url, tmp_path, env=env) as started:
            yield Cluster(started, url, clock_file)


async def outcome(call: object) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code(), error


async def test_caps_hold_across_two_replicas_M2_M11_M10_M9(cluster: Cluster) -> None:
    await asyncio.gather(*(r.wait_serving() for r in cluster.replicas))
    channels = [internal_channel(f"127.0.0.1:{r.port}", INTERNAL_TOKEN) for r in cluster.replicas]
    stubs = [Stub(c) for c in channels]
    conn = await asyncpg.connect(cluster.url)
    try:
        started = time.monotonic()
        await stock_is_sold_exactly_once(stubs, conn)
        await ten_activities_at_once(stubs, conn)
        await claims_stop_at_the_wallet_and_the_limit(stubs, conn)
        await expiry_refunds_each_packet_once(stubs, conn, cluster)
        elapsed = time.monotonic() - started
        print(f"\ncampaigns replicas: scenarios took {elapsed:.1f}s")
    finally:
        await conn.close()
        for channel in channels:
            await channel.close()
    for replica in cluster.replicas:
        replica.process.send_signal(signal.SIGTERM)
    for replica in cluster.replicas:
        assert replica.process.wait(20) == 0, replica.log.read_text()
    for replica in cluster.replicas:
        assert "Traceback" not in replica.log.read_text(), replica.log.read_text()


# -- M2 ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    replica: int
    consumer: str
    request_id: str
    quantity: int
    flash: bool


async def stock_is_sold_exactly_once(stubs: list[Stub], conn: asyncpg.Connection) -> None:
    store = "s-stock"
    await item(stubs[0], store, "hot", stock=STOCK, price=9_900)
    sale = (
        await stubs[1].CreateActivity(
            activity(store, "gs_stock", T0, flash_sale=pb.FlashSaleSpec(item_id="hot", flash_price_fen=4_900))
        )
    ).activity
    rng = random.Random(4)
    attempts: list[Attempt] = []
    for i in range(1700):
        attempts.append(Attempt(i % 2, f"c{i % 400}", f"p{i}", rng.choice((1, 1, 1, 1, 2)), flash=i % 3 != 0))
    pairs: list[tuple[Attempt, Attempt]] = []
    for i in range(150):  # the same request through both replicas at once: a client retrying
        first = Attempt(0, f"r{i}", f"retry{i}", 1, flash=i % 2 == 0)
        pairs.append((first, Attempt(1, first.consumer, first.request_id, 1, first.flash)))
    everything = attempts + [a for pair in pairs for a in pair]
    rng.shuffle(everything)
    assert len(everything) == 2000

    def call(a: Attempt) -> object:
        return stubs[a.replica].Purchase(
            pb.PurchaseRequest(
                request_id=a.request_id,
                store_id=store,
                consumer_id=a.consumer,
                group_member=True,
                order=pb.Order(item_id="hot", quantity=a.quantity, flash_sale_id=sale.activity_id if a.flash else ""),
            ),
            timeout=120,
        )

    started = time.monotonic()
    results = await asyncio.gather(*(outcome(call(a)) for a in everything))
    took = time.monotonic() - started
    answers = dict(zip(everything, results, strict=True))

    codes = Counter(code for code, _ in results)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}, codes
    for code, reply in results:
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            assert "M2" in reply.details()  # type: ignore[union-attr]
    for one, two in pairs:  # a retried request id: the same purchase, or the same refusal
        (code1, reply1), (code2, reply2) = answers[one], answers[two]
        assert code1 == code2, (code1, code2)
        if code1 is grpc.StatusCode.OK:
            assert reply1.purchase == reply2.purchase  # type: ignore[union-attr]
            assert reply1.replayed != reply2.replayed  # type: ignore[union-attr]

    fresh = [reply for code, reply in results if code is grpc.StatusCode.OK and not reply.replayed]  # type: ignore[union-attr]
    sold = sum(r.purchase.quantity for r in fresh)  # type: ignore[union-attr]
    rows = await conn.fetch(
        "SELECT purchase_id, request_id, quantity, flash_sale_id FROM purchases WHERE store_id = $1", store
    )
    left = await conn.fetchval("SELECT stock FROM items WHERE store_id = $1 AND item_id = 'hot'", store)
    assert left == 0 and sold == STOCK
    assert sum(r["quantity"] for r in rows) == STOCK
    assert sorted(r["purchase_id"] for r in rows) == sorted(r.purchase.purchase_id for r in fresh)  # type: ignore[union-attr]
    assert len({r["request_id"] for r in rows}) == len(rows)
    flash_rows = [r for r in rows if r["flash_sale_id"]]
    assert 0 < len(flash_rows) < len(rows)  # both kinds of sale drew on the one stock
    print(
        f"\nM2: {len(everything)} purchase attempts in {took:.2f}s: {len(rows)} purchases, {sold} units, stock {left}"
    )


# -- M11 ---------------------------------------------------------------------------------------


async def ten_activities_at_once(stubs: list[Stub], conn: asyncpg.Connection) -> None:
    store = "s-cap"
    kinds = [{"check_in": pb.CheckInSpec()}, {"voting": pb.VotingSpec(options=["A", "B"])}]
    requests = [(i % 2, activity(store, "gs_busy", T0, **kinds[i % 2])) for i in range(40)]
    requests += [(i % 2, activity(store, "gs_quiet", T0, check_in=pb.CheckInSpec())) for i in range(4)]
    results = await asyncio.gather(*(outcome(stubs[r].CreateActivity(req, timeout=60)) for r, req in requests))
    busy = Counter(code for code, _ in results[:40])
    assert busy == {grpc.StatusCode.OK: 10, grpc.StatusCode.FAILED_PRECONDITION: 30}, busy
    assert all(code is grpc.StatusCode.OK for code, _ in results[40:])
    for code, reply in results[:40]:
        if code is not grpc.StatusCode.OK:
            assert "M11" in reply.details()  # type: ignore[union-attr]
    counts = dict(
        await conn.fetch(
            "SELECT group_set_id, count(*) FROM activities WHERE store_id = $1 GROUP BY group_set_id", store
        )
    )
    assert counts == {"gs_busy": 10, "gs_quiet": 4}


# -- M10 ---------------------------------------------------------------------------------------


async def claims_stop_at_the_wallet_and_the_limit(stubs: list[Stub], conn: asyncpg.Connection) -> None:
    expires = T0 + timedelta(days=1)
    # Store A: plenty of cash, per-user limits above the wallet: the wallet (3) binds; the 10 coupons are scarce.
    wallet_store = (
        await stubs[0].CreateActivity(
            activity(
                "s-wallet",
                "gs_w",
                T0,
                red_packet_fountain=pb.FountainSpec(
                    pools=[pool(CASH, 100, 1000, 3, expires), pool(COUPON, 500, 10, 1, expires)]
                ),
            )
        )
    ).activity
    # Store B: the per-user limit (2) binds before the wallet.
    limit_store = (
        await stubs[1].CreateActivity(
            activity(
                "s-limit", "gs_l", T0, red_packet_fountain=pb.FountainSpec(pools=[pool(CASH, 100, 1000, 2, expires)])
            )
        )
    ).activity
    consumers = [f"u{i}" for i in range(20)]
    calls = []
    for c in consumers:
        for attempt in range(8):
            calls.append(("s-wallet", wallet_store.activity_id, c, f"w-{c}-{attempt}", attempt % 2))
            calls.append(("s-limit", limit_store.activity_id, c, f"l-{c}-{attempt}", (attempt + 1) % 2))
    random.Random(10).shuffle(calls)
    results = await asyncio.gather(
        *(
            outcome(
                stubs[r].ClaimPrize(
                    pb.ClaimPrizeRequest(
                        request_id=rid, store_id=store, activity_id=act, consumer_id=c, group_member=True
                    ),
                    timeout=60,
                )
            )
            for store, act, c, rid, r in calls
        )
    )
    codes = Counter(code for code, _ in results)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}, codes
    rows = await conn.fetch(
        "SELECT store_id, consumer_id, pool_id, kind FROM claims WHERE store_id IN ('s-wallet', 's-limit')"
    )
    per_consumer = Counter((r["store_id"], r["consumer_id"]) for r in rows)
    assert all(per_consumer[("s-wallet", c)] == WALLET for c in consumers), per_consumer
    assert all(per_consumer[("s-limit", c)] == 2 for c in consumers), per_consumer
    per_pool = Counter((r["consumer_id"], r["pool_id"]) for r in rows if r["store_id"] == "s-wallet")
    cash_pool, coupon_pool = wallet_store.pools
    assert all(per_pool[(c, coupon_pool.pool_id)] <= 1 and per_pool[(c, cash_pool.pool_id)] <= 3 for c in consumers)
    coupons = sum(1 for r in rows if r["kind"] == "store_coupon")
    remaining = dict(await conn.fetch("SELECT pool_id, remaining FROM pools WHERE store_id = 's-wallet'"))
    assert coupons <= 10 and remaining[coupon_pool.pool_id] == 10 - coupons
    assert remaining[cash_pool.pool_id] == 1000 - (len(consumers) * WALLET - coupons)
    granted = codes[grpc.StatusCode.OK]
    assert granted == len(rows) == len(consumers) * (WALLET + 2)
    print(f"\nM10: {len(calls)} concurrent claims: {granted} granted, {coupons} of 10 coupons")


# -- M9 ----------------------------------------------------------------------------------------


async def settled(conn: asyncpg.Connection, store: str, within: float = 60.0) -> None:
    """Until no held packet of ``store`` is left (every one expired by now); no sweep runs for ever."""
    deadline = time.monotonic() + within
    query = "SELECT count(*) FROM claims WHERE store_id = $1 AND state = 'held'"
    while (held := await conn.fetchval(query, store)) > 0:
        assert time.monotonic() < deadline, f"{held} expired packets still held after {within}s"
        await asyncio.sleep(0.05)


async def expiry_refunds_each_packet_once(stubs: list[Stub], conn: asyncpg.Connection, cluster: Cluster) -> None:
    store = "s-expiry"
    expires = T0 + timedelta(days=2)
    await item(stubs[0], store, "gift", stock=100, price=1_000)
    fountain = (
        await stubs[0].CreateActivity(
            activity(
                store,
                "gs_e",
                T0,
                minutes=60,
                red_packet_fountain=pb.FountainSpec(pools=[pool(CASH, 88, 400, 3, expires)]),
            )
        )
    ).activity
    consumers = [f"e{i}" for i in range(60)]
    claims = await asyncio.gather(
        *(
            stubs[n % 2].ClaimPrize(
                pb.ClaimPrizeRequest(
                    request_id=f"e-{c}-{n}",
                    store_id=store,
                    activity_id=fountain.activity_id,
                    consumer_id=c,
                    group_member=True,
                )
            )
            for c in consumers
            for n in range(WALLET)
        )
    )
    used = [reply.claim for reply in claims[:40:2]]  # 20 packets used in orders: never refunded
    for i, packet in enumerate(used):
        await stubs[i % 2].Purchase(
            pb.PurchaseRequest(
                request_id=f"buy-{i}",
                store_id=store,
                consumer_id=packet.consumer_id,
                group_member=True,
                order=pb.Order(item_id="gift", quantity=1, cash_red_packet_ids=[packet.claim_id]),
            )
        )
    cluster.set_time(expires + timedelta(minutes=1))  # the fountain ended and every packet expired
    runs = await asyncio.gather(*(stubs[i % 2].RunExpiry(pb.RunExpiryRequest(), timeout=60) for i in range(20)))
    # The timers of both replicas ran over the same rows. A call returns once what is left is locked by
    # another sweep (SKIP LOCKED), so a timer may still be settling this store's packets: wait for it.
    await settled(conn, store)
    unclaimed = 400 - len(claims)
    expected_refund = (len(claims) - len(used)) * 88 + unclaimed * 88
    ledger = await conn.fetch("SELECT source, source_id, amount_fen FROM refunds WHERE store_id = $1", store)
    by_source = Counter((r["source"], r["source_id"]) for r in ledger)
    assert max(by_source.values()) == 1  # nothing refunded twice
    refunded_packets = {r["source_id"] for r in ledger if r["source"] == "expired_red_packet"}
    assert refunded_packets == {reply.claim.claim_id for reply in claims} - {p.claim_id for p in used}
    assert sum(r["amount_fen"] for r in ledger) == expected_refund
    states = Counter(r["state"] for r in await conn.fetch("SELECT state FROM claims WHERE store_id = $1", store))
    assert states == {"refunded": len(claims) - len(used), "used": len(used)}
    by_rpc = sum(r.red_packets_refunded for r in runs)  # every store's expired packets, not only this one's
    print(
        f"\nM9: {len(claims) - len(used)} expired packets + 1 pool refunded once each, {expected_refund} fen "
        f"(RunExpiry x{len(runs)} on both replicas settled {by_rpc} packets of all stores, the timers the rest)"
    )
    assert (await stubs[1].GetItem(pb.GetItemRequest(store_id=store, item_id="gift"))).item.stock == 100 - len(used)
