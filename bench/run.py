"""`make bench`: qun's flows measured against the machine's own gRPC limit, in one run.

Starts what it measures (the echo baseline, then the whole stack on SQLite or
PostgreSQL), seeds data, warms up, and drives each flow with the load
generator (``bench.loadgen``, its own process, 64 calls in flight). Every
figure is reported beside its target and, where the target is a ratio, as a
ratio to the echo baseline measured in the same run: a noisy machine moves
both alike. Results are printed and written to ``results/`` as JSON and
Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import make_url

from bench.echo import METHOD as ECHO_METHOD
from bench.loadgen import Call, write_calls
from bench.push import recall_push
from bench.seed import seed_members
from cli import facts
from cli.stack import Stack, free_port, wait_serving
from gateway.auth import Principal, Role, mint_token
from qun.common.v1 import groups_pb2 as common_pb2
from qun.common.v1 import facts_pb2
from qun.gateway.v1 import campaigns_pb2, campaigns_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from services.common.interceptors import INTERNAL_TOKEN_HEADER

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


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rows: list[Row] = []
        self.echo_rps = 0.0

    # -- plumbing ----------------------------------------------------------------------------

    def progress(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def load(self, target: str, calls: list[Call], *, cycle: bool = False, duration: float | None = None) -> dict[str, Any]:
        path = self.work / f"calls-{uuid.uuid4().hex[:6]}.jsonl"
        write_calls(path, calls)
        command = [
            sys.executable, "-m", "bench.loadgen", "--target", target, "--calls", str(path),
            "--concurrency", str(self.args.concurrency),
            "--duration", str(duration or self.args.duration), "--warmup", str(self.args.warmup),
        ]
        if cycle:
            command.append("--cycle")
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return dict(json.loads(done.stdout))

    def ratio_row(self, name: str, result: dict[str, Any], target: float, ok_codes: set[str]) -> None:
        good = sum(n for code, n in result["codes"].items() if code in ok_codes)
        rate = good / result["seconds"] if result["seconds"] else 0.0
        ratio = rate / self.echo_rps if self.echo_rps else 0.0
        self.rows.append(
            Row(name, f"{rate:,.0f}/s = {ratio:.2f} × E (p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms)",
                f"≥ {target:.2f} × E", ratio >= target, result)
        )

    # -- rows --------------------------------------------------------------------------------

    def baseline(self) -> None:
        self.progress("baseline E: echo service on the shared runtime")
        token = "bench-internal-token-0123456789"
        port, metrics_port = free_port(), free_port()
        env = {**os.environ, "QUN_INTERNAL_TOKEN": token, "QUN_GRPC_PORT": str(port),
               "QUN_METRICS_PORT": str(metrics_port), "QUN_LOG_LEVEL": "WARNING"}
        echo = subprocess.Popen([sys.executable, "-m", "bench.echo"], env=env, stdout=subprocess.DEVNULL)
        try:
            wait_serving(f"127.0.0.1:{port}", 30)
            calls = [Call(ECHO_METHOD, b"x" * 64, ((INTERNAL_TOKEN_HEADER, token),))]
            result = self.load(f"127.0.0.1:{port}", calls, cycle=True)
        finally:
            echo.terminate()
            echo.wait(10)
        self.echo_rps = result["per_second"]
        self.rows.append(Row("E  echo baseline", f"{self.echo_rps:,.0f}/s (p50 {result['p50_ms']} ms)", "—", None, result))

    @contextlib.contextmanager
    def stack(self) -> Iterator[Stack]:
        with contextlib.ExitStack() as cleanup:
            urls: dict[str, str] = {}
            if self.args.db == "postgres":
                urls = {name: cleanup.enter_context(postgres_database(name)) for name in ("eligibility", "groups")}
            stack = Stack(self.work / f"data-{uuid.uuid4().hex[:6]}", database_urls=urls, fixed_ports=False,
                          extra_env={"QUN_LOG_LEVEL": "WARNING"})
            started = time.perf_counter()
            stack.start()
            self.cold_start = time.perf_counter() - started
            try:
                yield stack
            finally:
                stack.stop()

    def flows(self) -> None:
        with self.stack() as stack:
            self.rows.append(Row("7  cold start", f"{self.cold_start:.1f} s to every process SERVING", "≤ 5 s",
                                 self.cold_start <= 5.0))
            secret = stack.secrets["QUN_TOKEN_SECRET"]
            gateway = stack.gateway.address
            seeder = Seeder(gateway, secret)
            self.progress("seeding a store, its group-sets and eligible consumers")
            store_id, group_ids = seeder.store_with_groups("bench", sets=5)
            expected = int(self.echo_rps * 0.6 * (self.args.duration + self.args.warmup)) + 500
            joiners = seeder.consumers("j", min(expected, 25_000), follows=store_id)
            calls = [join_call(secret, c, group_ids[i % len(group_ids)]) for i, c in enumerate(joiners)]
            self.progress(f"join: {len(calls)} fresh consumers")
            joined = self.load(gateway, calls)
            self.ratio_row("2  join", joined, 0.20, {"OK"})
            p50, p99 = joined["p50_ms"], joined["p99_ms"]
            self.rows.append(Row("2b join tail", f"p99 {p99} ms = {p99 / p50 if p50 else 0:.1f} × p50", "≤ 4 × p50",
                                 bool(p50) and p99 <= 4 * p50, {}))

            refused = seeder.consumers("r", 200, real_name=False, score=300)
            self.progress("refused join: consumers failing C1, C2 and C9")
            result = self.load(gateway, [join_call(secret, c, group_ids[0]) for c in refused], cycle=True)
            self.ratio_row("3  refused join", result, 0.30, {"FAILED_PRECONDITION"})

            self.flash(stack, seeder, secret)
            self.size(stack, seeder, secret)

    def flash(self, stack: Stack, seeder: Seeder, secret: str) -> None:
        self.progress("flash purchase: 200 members buying one hot item")
        stock = 1000
        store_id, group_ids = seeder.store_with_groups("flash", sets=1)
        members = seeder.consumers("f", 200, follows=store_id)
        for consumer in members:
            seeder.join(consumer, group_ids[0])
        sale_id = seeder.flash_sale(store_id, group_ids[0], "hot", stock)
        attempts = int(self.echo_rps * 0.6 * (self.args.duration + self.args.warmup)) + 1000
        calls = [
            purchase_call(secret, members[i % len(members)], store_id, "hot", sale_id, f"p{i}") for i in range(attempts)
        ]
        result = self.load(stack.gateway.address, calls)
        self.ratio_row("4  flash purchase", result, 0.20, {"OK", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"})
        left, sold = seeder.stock_and_sold(store_id, "hot")
        oversold = max(0, sold - stock) + max(0, -left)
        self.rows.append(
            Row("4b oversold", f"{oversold} (sold {sold} of {stock}, stock left {left})", "0", oversold == 0,
                {"codes": result["codes"]})
        )

    def size(self, stack: Stack, seeder: Seeder, secret: str) -> None:
        self.progress("size: a store of 50 members and a store of 500,000 (seeded directly)")
        small_store, small_groups = seeder.store_with_groups("small", sets=1)
        big_store, big_groups = seeder.store_with_groups("big", sets=1)
        seed_members(stack.env_for("groups"), f"store:{big_store}", big_groups[0], 500_000)
        results = {}
        for label, store_id, groups in (("small", small_store, small_groups), ("big", big_store, big_groups)):
            people = seeder.consumers(f"z{label}", 1500, follows=store_id)
            results[label] = self.load(stack.gateway.address, [join_call(secret, c, groups[0]) for c in people],
                                       duration=min(self.args.duration, 5.0))
        ratio = results["big"]["p50_ms"] / results["small"]["p50_ms"] if results["small"]["p50_ms"] else 0.0
        self.rows.append(Row("5  size", f"join p50 {results['big']['p50_ms']} ms at 500,000 ÷ "
                             f"{results['small']['p50_ms']} ms at 50 = {ratio:.2f}", "≤ 1.2", ratio <= 1.2, results))

    # -- report ------------------------------------------------------------------------------

    def report(self) -> str:
        header = f"qun bench — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, db {self.args.db}"
        lines = [header, "", "| row | figure | target | met |", "|---|---|---|---|"]
        for row in self.rows:
            met = "—" if row.met is None else ("yes" if row.met else "NO")
            lines.append(f"| {row.name} | {row.figure} | {row.target} | {met} |")
        return "\n".join(lines)


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
        store_id, main_id = f"{label}-{self.run}", f"{label}-main-{self.run}"
        self.report(facts.store(store_id, main_id, datetime.now(UTC)))
        owner = self.auth(Principal(main_id, Role.STORE_MAIN, store_id))
        ids = [
            self.groups.CreateGroupSet(
                gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name=f"群{i}", threshold=FOLLOW),
                metadata=owner,
                timeout=30,
            ).group_set.group_set_id
            for i in range(sets)
        ]
        return store_id, ids

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
                store_id=store_id, item_id=item_id, platform=facts_pb2.PLATFORM_TAOBAO, sku_count=1,
                price_min_fen=10_000, price_max_fen=10_000, initial_stock=stock,
            ),
            metadata=upstream,
            timeout=30,
        )
        now = datetime.now(UTC)
        starts, ends = Timestamp(), Timestamp()
        starts.FromDatetime(now - timedelta(minutes=1))
        ends.FromDatetime(now + timedelta(hours=1))
        main_id = store_id.replace("flash-", "flash-main-")
        created = self.campaigns.CreateActivity(
            campaigns_pb2.CreateActivityRequest(
                group_set_id=group_set_id, title="秒杀", starts_at=starts, ends_at=ends,
                flash_sale=campaigns_pb2.FlashSaleSpec(item_id=item_id, flash_price_fen=6_000),
            ),
            metadata=self.auth(Principal(main_id, Role.STORE_MAIN, store_id)),
            timeout=30,
        )
        return str(created.activity.activity_id)

    def stock_and_sold(self, store_id: str, item_id: str) -> tuple[int, int]:
        upstream = self.auth(Principal("bench", Role.UPSTREAM))
        item = self.campaigns.GetItem(campaigns_pb2.GetItemRequest(store_id=store_id, item_id=item_id), metadata=upstream)
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

    def consumers(self, label: str, count: int, *, follows: str = "", real_name: bool = True, score: int = 600) -> list[str]:
        ids = [f"{label}{self.run}-{i}" for i in range(count)]
        reported = [
            fact
            for c in ids
            for fact in facts.consumer(c, score=score, real_name=real_name, follows=(follows,) if follows else ())
        ]
        self.report(reported)
        return ids


@contextlib.contextmanager
def postgres_database(label: str) -> Iterator[str]:
    server = make_url(os.environ.get("TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")).set(drivername="postgresql")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--results", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qun-bench-") as work:
        bench = Bench(args, Path(work))
        steps: list[Callable[[], None]] = [bench.baseline, bench.flows, lambda: bench.rows.append(recall_push(bench))]
        for step in steps:
            step()
    table = bench.report()
    print("\n" + table)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.results / f"bench-{stamp}.md").write_text(table + "\n")
    (args.results / f"bench-{stamp}.json").write_text(
        json.dumps([row.__dict__ for row in bench.rows], indent=2, ensure_ascii=False, default=str)
    )
    print(f"\nwritten to {args.results}/bench-{stamp}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
