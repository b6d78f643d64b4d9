"""Processes die under load and come back; nothing the gateway acknowledged is lost or doubled.

While workers join, buy, submit and approve pushes (and the clock moves so the
dispatcher sends them), each backend and then the gateway is killed with
SIGKILL and restarted, and PostgreSQL itself is restarted. Then:

- every request the gateway answered OK is in the databases, once;
- nothing is half-done: every member is in a sub-group, the counters equal the
  rows, stock + sold = the initial stock, every spent quota has its push, every
  sent push has one delivery per recipient;
- while a process is down, calls that need it end with UNAVAILABLE in bounded
  time (never INTERNAL, never a hang), and the gateway recovers by itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from sqlalchemy.engine import make_url

from qun.gateway.v1 import campaigns_pb2 as cpb
from qun.gateway.v1 import gateway_pb2
from qun.gateway.v1 import push_pb2 as ppb
from services.common.processes import BACKENDS
from tests.support import facts, postgres
from tests.support.load import CALL_TIMEOUT, INITIAL_STOCK, UPSTREAM, Load
from tests.support.stack import RunningStack, running_stack, unique

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.stack]

# A call that needs a dead process must fail this fast (the gateway's budget is 2 s a try).
UNAVAILABLE_WITHIN = 8.0
RECOVER_WITHIN = 20.0
DOWN_SECONDS = 1.5
POSTGRES_READY_WITHIN = 60.0
POSTGRES_DOWN_SECONDS = 3.0
DISPATCH_WITHIN = 30.0
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def pg_ctl(action: str) -> None:
    """Stops or starts the machine's PostgreSQL cluster; after a start, waits (bounded) until it accepts connections."""
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action],
        check=True,
        capture_output=True,
        timeout=POSTGRES_READY_WITHIN,
    )
    if action == "stop":
        return
    url = make_url(postgres.server_url())
    ready = ["pg_isready", "-q", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    deadline = time.monotonic() + POSTGRES_READY_WITHIN
    while subprocess.run(ready, check=False).returncode != 0:
        assert time.monotonic() < deadline, "PostgreSQL did not accept connections again"
        time.sleep(0.2)


def can_restart_postgres() -> bool:
    """The local server is restarted with Debian's pg_ctlcluster (the one TEST_DATABASE_URL names)."""
    clusters = Path("/etc/postgresql")
    return shutil.which("pg_ctlcluster") is not None and clusters.is_dir() and any(clusters.iterdir())


class Probes:
    """One call per process that needs only that process (and the gateway)."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.shop = load.shops[0]
        gw = load.gw
        self.calls = {
            "eligibility": lambda: gw.facts.ReportFacts(
                gateway_pb2.ReportFactsRequest(facts=facts.consumer(unique("probe"))),
                metadata=gw.auth(UPSTREAM),
                timeout=CALL_TIMEOUT,
            ),
            "groups": lambda: gw.groups.ListMyGroups(
                gateway_pb2.ListMyGroupsRequest(), metadata=gw.auth(gw.consumer(unique("probe"))), timeout=CALL_TIMEOUT
            ),
            "campaigns": lambda: load.campaigns.GetItem(
                cpb.GetItemRequest(store_id=self.shop.store_id, item_id=self.shop.item_id),
                metadata=gw.auth(UPSTREAM),
                timeout=CALL_TIMEOUT,
            ),
            "push": lambda: load.push.ListPushNotices(
                ppb.ListPushNoticesRequest(),
                metadata=gw.auth(gw.main_account(self.shop.main_id, self.shop.store_id)),
                timeout=CALL_TIMEOUT,
            ),
        }
        self.calls["gateway"] = self.calls["groups"]

    async def while_down(self, name: str) -> tuple[grpc.StatusCode, float]:
        code, _ = await self.load.call(f"probe-{name}", self.calls[name])
        return code, self.load.latencies[-1][1]

    async def until_up(self, name: str) -> float:
        start = time.monotonic()
        while True:
            code, _ = await self.load.call(f"probe-{name}", self.calls[name])
            if code is grpc.StatusCode.OK:
                return time.monotonic() - start
            assert code not in BAD_CODES, f"{name}: {code.name} while recovering"
            assert time.monotonic() - start < RECOVER_WITHIN, f"the gateway did not recover after {name} came back"
            await asyncio.sleep(0.1)


async def kill_and_restart(running: RunningStack, probes: Probes, name: str, report: list[str]) -> None:
    stack = running.stack
    await asyncio.to_thread(stack.stop_process, name, signal.SIGKILL)
    await asyncio.sleep(0.3)
    code, seconds = await probes.while_down(name)
    assert code is grpc.StatusCode.UNAVAILABLE, f"with {name} down the gateway answered {code.name}"
    assert seconds < UNAVAILABLE_WITHIN, f"with {name} down a call took {seconds:.1f}s"
    await asyncio.sleep(DOWN_SECONDS)
    start = time.monotonic()
    await asyncio.to_thread(stack.start_process, name)
    await asyncio.to_thread(stack.wait, name)
    serving = time.monotonic() - start
    recovered = await probes.until_up(name)
    report.append(
        f"{name}: UNAVAILABLE in {seconds:.2f}s while down; SERVING {serving:.1f}s; recovered +{recovered:.2f}s"
    )


async def postgres_outage(probes: Probes, report: list[str]) -> None:
    """PostgreSQL stops under load (every pooled connection dies) and starts again."""
    start = time.monotonic()
    await asyncio.to_thread(pg_ctl, "stop")
    stopped = time.monotonic()
    try:
        during: Counter[str] = Counter()
        while time.monotonic() - stopped < POSTGRES_DOWN_SECONDS:
            for name in BACKENDS:  # every backend, asked while its database is gone
                code, seconds = await probes.while_down(name)
                assert code is grpc.StatusCode.UNAVAILABLE, f"{name} answered {code.name} with PostgreSQL down"
                assert seconds < UNAVAILABLE_WITHIN, f"{name}: a call took {seconds:.1f}s with PostgreSQL down"
                during[code.name] += 1
            await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(pg_ctl, "start")
    restarted = time.monotonic() - start
    report.append(
        f"postgres stop {stopped - start:.1f}s, down {POSTGRES_DOWN_SECONDS:.0f}s, back after {restarted:.1f}s: "
        f"probes answered {dict(during)}"
    )
    for name in BACKENDS:
        recovered = await probes.until_up(name)
        report.append(f"{name} recovered +{recovered:.2f}s")


async def wait_dispatched(running: RunningStack, push_url: str) -> None:
    """Moves the clock past every send time and waits (bounded) until nothing approved is left."""
    running.set_time(running.now + timedelta(hours=25))
    deadline = time.monotonic() + DISPATCH_WITHIN
    conn = await asyncpg.connect(push_url)
    try:
        while await conn.fetchval("SELECT count(*) FROM pushes WHERE upper(state) IN ('APPROVED', 'SENDING')"):
            assert time.monotonic() < deadline, "approved pushes were not dispatched"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def verify(load: Load, urls: dict[str, str]) -> dict[str, int]:
    """Reads every service's database; returns lost and duplicated counts, asserting consistency."""
    lost = duplicated = 0
    problems: list[str] = []

    groups = await asyncpg.connect(urls["groups"])
    try:
        members = {
            (r["group_set_id"], r["consumer_id"])
            for r in await groups.fetch("SELECT group_set_id, consumer_id FROM memberships")
        }
        for op in load.ops:
            if op.kind == "join" and op.acknowledged and op.key not in members:
                lost += 1
                problems.append(f"acknowledged join lost: {op}")
        bad = await groups.fetch(
            """SELECT g.id, g.member_count, g.sub_group_count,
                      (SELECT count(*) FROM memberships m WHERE m.group_set_id = g.id) AS members,
                      (SELECT count(*) FROM sub_groups s WHERE s.group_set_id = g.id) AS subs
               FROM group_sets g"""
        )
        for row in bad:
            if row["member_count"] != row["members"] or row["sub_group_count"] != row["subs"]:
                problems.append(f"group-set counters off: {dict(row)}")
        subs = await groups.fetch(
            """SELECT s.id, s.member_count, count(m.consumer_id) AS members FROM sub_groups s
               LEFT JOIN memberships m ON m.sub_group_id = s.id GROUP BY s.id, s.member_count"""
        )
        problems += [f"sub-group counter off: {dict(r)}" for r in subs if r["member_count"] != r["members"]]
        orphans = await groups.fetchval(
            """SELECT count(*) FROM memberships m LEFT JOIN sub_groups s
               ON s.id = m.sub_group_id AND s.group_set_id = m.group_set_id WHERE s.id IS NULL"""
        )
        if orphans:
            problems.append(f"{orphans} members without their sub-group")
        owners = await groups.fetch(
            """SELECT o.owner_key, o.group_set_count,
                      (SELECT count(*) FROM group_sets g WHERE g.owner_key = o.owner_key AND g.dissolved_at IS NULL) AS sets
               FROM capacity_owners o"""
        )
        problems += [f"owner counter off: {dict(r)}" for r in owners if r["group_set_count"] != r["sets"]]
    finally:
        await groups.close()

    campaigns = await asyncpg.connect(urls["campaigns"])
    try:
        rows = await campaigns.fetch("SELECT request_id, count(*) AS n FROM purchases GROUP BY request_id")
        bought = {r["request_id"]: r["n"] for r in rows}
        for op in load.ops:
            if op.kind == "purchase":
                n = bought.get(op.request_id, 0)
                if op.acknowledged and n == 0:
                    lost += 1
                    problems.append(f"acknowledged purchase lost: {op}")
                if n > 1:
                    duplicated += 1
                    problems.append(f"purchase {op.request_id} recorded {n} times")
        items = await campaigns.fetch(
            """SELECT i.store_id, i.item_id, i.stock, coalesce(sum(p.quantity), 0) AS sold FROM items i
               LEFT JOIN purchases p ON p.store_id = i.store_id AND p.item_id = i.item_id
               GROUP BY i.store_id, i.item_id, i.stock"""
        )
        for row in items:
            if row["stock"] + row["sold"] != INITIAL_STOCK:
                problems.append(f"stock taken without a purchase (or the reverse): {dict(row)}")
    finally:
        await campaigns.close()

    push = await asyncpg.connect(urls["push"])
    try:
        rows = await push.fetch(
            "SELECT store_id, push_id, request_id, state, audience_size, delivered_count FROM pushes"
        )
        by_request = Counter(r["request_id"] for r in rows)
        by_store = Counter(r["store_id"] for r in rows)
        states = {(r["store_id"], r["push_id"]): r["state"].upper() for r in rows}
        for op in load.ops:
            if op.kind == "push":
                n = by_request.get(op.request_id, 0)
                if op.acknowledged and n == 0:
                    lost += 1
                    problems.append(f"acknowledged push lost: {op}")
                if n > 1 or by_store.get(op.key[0], 0) > 1:
                    duplicated += 1
                    problems.append(f"push {op.request_id} recorded {max(n, by_store[op.key[0]])} times")
            if op.kind == "review" and op.acknowledged and states.get(op.key) != "SENT":
                lost += 1
                problems.append(f"acknowledged approval not sent: {op} is {states.get(op.key)}")
        deliveries = {
            (r["store_id"], r["push_id"]): r["n"]
            for r in await push.fetch(
                "SELECT store_id, push_id, count(*) AS n FROM deliveries GROUP BY store_id, push_id"
            )
        }
        for r in rows:
            got = deliveries.get((r["store_id"], r["push_id"]), 0)
            if r["state"].upper() == "SENT" and not (got == r["audience_size"] == r["delivered_count"]):
                problems.append(f"deliveries {got} for a sent push: {dict(r)}")
            if r["state"].upper() != "SENT" and got:
                problems.append(f"deliveries {got} for an unsent push: {dict(r)}")
        spent_without_push = await push.fetchval(
            """SELECT count(*) FROM recall_slots s LEFT JOIN pushes p
               ON p.store_id = s.store_id AND p.push_id = s.push_id WHERE p.push_id IS NULL"""
        )
        if spent_without_push:
            problems.append(f"{spent_without_push} quotas spent without a push")
    finally:
        await push.close()

    assert not problems, "\n".join(problems[:30])
    return {"lost": lost, "duplicated": duplicated}


async def test_kill_each_process_and_postgres_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    postgres.require()
    if not can_restart_postgres():
        message = "pg_ctlcluster is not available to restart PostgreSQL"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " and REQUIRE_POSTGRES=1")
        pytest.skip(message)
    began = time.monotonic()
    with running_stack(tmp_path, "postgres") as running:
        gw = running.client()
        load = Load(running, gw, workers=3)
        report: list[str] = []
        try:
            tasks = await load.run(shops=2)
            probes = Probes(load)
            await asyncio.sleep(3)
            for name in (*BACKENDS, "gateway"):
                await kill_and_restart(running, probes, name, report)
                await asyncio.sleep(2)
            await postgres_outage(probes, report)
            await asyncio.sleep(3)
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), CALL_TIMEOUT * 3)
            await wait_dispatched(running, running.stack.database_urls["push"])
            figures = await verify(load, running.stack.database_urls)
        finally:
            load.stop.set()
            await gw.close()

    counts = {**load.counts(), **figures}
    codes = Counter(call.code.name for call in load.calls)
    slowest = max(call.seconds for call in load.calls)
    print("\nfaults:", "; ".join(report))
    print(f"faults: {counts} codes {dict(codes)} slowest call {slowest:.2f}s in {time.monotonic() - began:.0f}s")
    bad = [call for call in load.calls if call.code in BAD_CODES]
    assert not bad, f"{len(bad)} calls ended {Counter(c.code.name for c in bad)}: {bad[:5]}"
    assert counts["lost"] == 0 and counts["duplicated"] == 0
    assert counts["acknowledged"] > 0 and counts["reviews_acknowledged"] > 0
    hung = [call for call in load.calls if call.seconds >= CALL_TIMEOUT - 0.5]
    assert not hung, f"calls that hung until the caller's deadline: {hung[:5]}"


LONG_OUTAGE_SECONDS = 20.0
RECOVER_AFTER_LONG_OUTAGE_WITHIN = 2.5


async def test_after_a_long_outage_the_gateway_reconnects_within_seconds_of_serving(tmp_path: Path) -> None:
    """gRPC's reconnect backoff grows to two minutes by default: a backend down for a while was
    SERVING again long before the gateway tried it. The gateway's channels cap the backoff."""
    with running_stack(tmp_path, "sqlite") as running:
        gw = running.client()
        load = Load(running, gw)
        try:
            await load.open_shop()
            probes = Probes(load)
            stack = running.stack
            await asyncio.to_thread(stack.stop_process, "groups", signal.SIGKILL)
            end = time.monotonic() + LONG_OUTAGE_SECONDS
            while time.monotonic() < end:  # callers keep asking while it is down
                code, seconds = await probes.while_down("groups")
                assert code is grpc.StatusCode.UNAVAILABLE and seconds < UNAVAILABLE_WITHIN
                await asyncio.sleep(0.5)
            await asyncio.to_thread(stack.start_process, "groups")
            await asyncio.to_thread(stack.wait, "groups")
            recovered = await probes.until_up("groups")
            print(
                f"\nfaults: groups down {LONG_OUTAGE_SECONDS:.0f}s; the gateway recovered {recovered:.2f}s after SERVING"
            )
            assert recovered < RECOVER_AFTER_LONG_OUTAGE_WITHIN
        finally:
            await gw.close()
