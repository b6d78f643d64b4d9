"""The bursts a marketplace sees, on the stack the flows ran on: rows 8–10 of ``make bench``.

- **Live-stream burst** (row 8): 50,000 consumers join one store's ten group-sets (an L4
  store: 10 × 5,000, T2), sub-groups made as they fill (T5), 64 calls in flight; the total
  time and the rate as a ratio to E2, then every cap checked exact in the database (T6).
- **Many stores** (row 9): joins spread over 100 stores at once, as a ratio to E2.
- **Push facts at scale** (row 10): the figures a push submission reads (old-customer fans,
  P3) for a store of 1,000,000 orders against one of 1,000, p50 of each (small, big, big,
  small); the ratio must stay near 1 however many orders a store has.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
from sqlalchemy.engine import make_url

from bench import bulk
from bench.shared import Row, Seeder, join_call
from cli.stack import Stack
from gateway.auth import Principal, Role
from qun.gateway.v1 import push_pb2, push_pb2_grpc
from services.common.rules import load_rules
from services.common.settings import database_url

if TYPE_CHECKING:
    from bench.run import Bench

BURST_SETS = 10
STORES = 100
PER_STORE = 60
BIG_ORDERS, SMALL_ORDERS = 1_000_000, 1_000
FACT_READS = 40


def burst(bench: Bench, stack: Stack, seeder: Seeder, secret: str) -> None:
    """Row 8: a live stream's fans into one store's ten sets; then the caps, exact."""
    rules = load_rules()
    per_set = rules.store_groups.group_set_capacity
    joiners = BURST_SETS * per_set
    bench.progress(f"live-stream burst: {joiners:,} consumers into one L4 store's {BURST_SETS} group-sets")
    store_id, main_id = seeder.new_store("burst")
    seeder.set_level(store_id, rules.store_groups.group_sets_by_level.index(BURST_SETS))
    sets = seeder.group_sets(store_id, main_id, BURST_SETS)
    people = seeder.consumers("b", joiners, follows=store_id)
    calls = [join_call(secret, c, sets[i % BURST_SETS]) for i, c in enumerate(people)]
    started = time.perf_counter()
    result = bench.load(stack.gateway.address, calls, duration=3600, warmup=0)
    seconds = time.perf_counter() - started
    joined = result["codes"].get("OK", 0)
    exact = asyncio.run(caps_exact(database_url(stack.env_for("groups"), "groups"), sets, rules))
    rate = joined / result["seconds"] if result["seconds"] else 0.0
    limit = bench.call_limits.get(2, 0.0)
    bench.rows.append(
        Row(
            "8  live-stream burst",
            f"{joined:,} joins in {seconds:.1f} s = {rate:,.0f}/s = {rate / limit:.2f} × E2"
            f" (p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms); caps exact: {exact or 'yes'}",
            f"{joiners:,} joined, every cap exact",
            joined == joiners and not exact,
            result,
        )
    )


async def caps_exact(url: str, sets: list[str], rules: Any) -> str:
    """'' when every counter equals its rows and no cap is passed (T1, T5, T6); else what is off."""
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        rows = await conn.fetch(
            """
            SELECT s.id, s.member_count, s.sub_group_count,
                   (SELECT count(*) FROM memberships m WHERE m.group_set_id = s.id) AS members,
                   (SELECT count(*) FROM sub_groups g WHERE g.group_set_id = s.id) AS subs,
                   (SELECT max(member_count) FROM sub_groups g WHERE g.group_set_id = s.id) AS fullest,
                   (SELECT count(*) FROM sub_groups g WHERE g.group_set_id = s.id AND g.member_count <>
                       (SELECT count(*) FROM memberships m WHERE m.sub_group_id = g.id)) AS miscounted
            FROM group_sets s WHERE s.id = ANY($1::text[])
            """,
            sets,
        )
    finally:
        await conn.close()
    store = rules.store_groups
    off = []
    for row in rows:
        if row["member_count"] != row["members"] or row["sub_group_count"] != row["subs"] or row["miscounted"]:
            off.append(f"{row['id']} counters")
        if row["members"] > store.group_set_capacity or (row["fullest"] or 0) > store.sub_group_capacity:
            off.append(f"{row['id']} over a cap")
        if row["subs"] > store.sub_groups_per_set:
            off.append(f"{row['id']} too many sub-groups")
    return ", ".join(off)


def many_stores(bench: Bench, stack: Stack, seeder: Seeder, secret: str) -> None:
    """Row 9: joins spread over 100 stores at once (no one store's lock in the way)."""
    bench.progress(f"many stores: {STORES * PER_STORE:,} joins spread over {STORES} stores")
    calls = []
    for n in range(STORES):
        store_id, main_id = seeder.new_store(f"many{n}")
        [group_set] = seeder.group_sets(store_id, main_id, 1)
        calls += [join_call(secret, c, group_set) for c in seeder.consumers(f"m{n}-", PER_STORE, follows=store_id)]
    interleaved = [
        call for batch in itertools.zip_longest(*[calls[i::STORES] for i in range(STORES)]) for call in batch if call
    ]
    result = bench.load(stack.gateway.address, interleaved, duration=600, warmup=0)
    bench.ratio_row("9  many stores", result, 0.6, {"OK"}, calls=2)


def push_facts(bench: Bench, stack: Stack, seeder: Seeder, secret: str) -> None:
    """Row 10: the push figures of a store of 1,000,000 orders read as fast as a store of 1,000's."""
    bench.progress(f"push facts at scale: a store of {BIG_ORDERS:,} orders and one of {SMALL_ORDERS:,}")
    now = datetime.now(UTC)
    url = database_url(stack.env_for("eligibility"), "eligibility")
    stores: dict[str, tuple[str, str]] = {}
    fans: dict[str, int] = {}
    recount_seconds: dict[str, float] = {}
    rules = load_rules(env=stack.env_for("eligibility"))
    for label, orders in (("small", SMALL_ORDERS), ("big", BIG_ORDERS)):
        store_id, main_id = seeder.new_store(f"facts{label}", orders=0)
        buyers = (orders + 2) // 3
        rows = (
            (store_id, f"{store_id}-o{i}", f"{store_id}-c{i // 3}", 1000, now - timedelta(days=1 + i % 90))
            for i in range(orders)
        )
        # Every buyer bought on three different days; every other one follows the store.
        follows = ((store_id, f"{store_id}-c{c}", True) for c in range(0, buyers, 2))
        recount_seconds[label] = asyncio.run(bulk.load(url, rules, orders=rows, follows=follows))
        stores[label] = (store_id, main_id)
        fans[label] = (buyers + 1) // 2
    channel = grpc.insecure_channel(stack.gateway.address)
    stub = push_pb2_grpc.PushServiceStub(channel)
    timings: dict[str, list[float]] = {"small": [], "big": []}
    failed: dict[str, str] = {}
    try:
        for label in ("small", "big", "big", "small"):
            store_id, main_id = stores[label]
            metadata = seeder.auth(Principal(main_id, Role.STORE_MAIN, store_id))
            for _ in range(FACT_READS // 2):
                started = time.perf_counter()
                try:
                    ledger = stub.GetQuotaLedger(push_pb2.GetQuotaLedgerRequest(), metadata=metadata, timeout=60)
                except grpc.RpcError as error:  # the figures took longer than the gateway's deadline
                    failed[label] = error.code().name
                else:
                    if ledger.figures.old_customer_fans != fans[label]:
                        failed[label] = f"{ledger.figures.old_customer_fans} old-customer fans, not {fans[label]}"
                timings[label].append(time.perf_counter() - started)
    finally:
        channel.close()
    if failed:
        bench.rows.append(
            Row("10 push facts at scale", f"reading the figures failed: {failed}", "≤ 1.2", False, {"failed": failed})
        )
        return
    p50 = {label: sorted(values)[len(values) // 2] * 1000 for label, values in timings.items()}
    ratio = p50["big"] / p50["small"] if p50["small"] else float("inf")
    bench.rows.append(
        Row(
            "10 push facts at scale",
            f"figures read in {p50['big']:.1f} ms for {BIG_ORDERS:,} orders ÷ {p50['small']:.1f} ms for"
            f" {SMALL_ORDERS:,} = {ratio:.2f}",
            "≤ 1.2",
            ratio <= 1.2,
            {"p50_ms": p50, "old_customer_fans": fans, "recount_seconds": recount_seconds},
        )
    )
