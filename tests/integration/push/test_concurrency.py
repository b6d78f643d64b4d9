"""SPEC P1, P2, P5 and P7 with two real replicas of the push service on one PostgreSQL.

Two ``python -m services.push`` processes share a database. First they take
concurrent submissions of every kind for one store, through both replicas at
once: each quota is spent exactly once. Then a 100,000-recipient recall push
is approved and both replicas' dispatchers write its deliveries while each in
turn is killed with SIGKILL mid-dispatch and restarted: the ledger ends with
exactly one delivery per recipient, and a reader following it sees each
recipient once. The time it took and each process's peak RSS are printed.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from qun.push.v1 import push_pb2 as p
from qun.push.v1 import push_pb2_grpc
from services.common.client import internal_channel
from services.common.clock import FileClock
from tests.support.inprocess import INTERNAL_TOKEN
from tests.support.replicas import Replica, replicas

pytestmark = pytest.mark.postgres

START = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
RECIPIENTS = 100_000
APPEND_CHUNK = 5000
BATCH = 1000
QUALIFIED = p.AccountFacts(subscribers=500, old_customer_fans=5000, recent_broadcasts=9, revisit_rate_bp=800)
MAX_PEAK_RSS_MB = 400  # a batch's bookkeeping, not the audience: far below what 100,000 ids would need in rows


@pytest.fixture
def clock_file(tmp_path: Path) -> Path:
    path = tmp_path / "clock"
    FileClock.write(path, START)
    return path


@pytest.fixture
def running(pg_url: str, tmp_path: Path, clock_file: Path) -> Iterator[list[Replica]]:
    env = {
        "QUN_CLOCK_FILE": str(clock_file),
        "QUN_PUSH_DISPATCH_BATCH": str(BATCH),
        "QUN_PUSH_DISPATCH_POLL_SECONDS": "0.05",
    }
    with replicas("push", pg_url, tmp_path, env=env) as started:
        yield started


@pytest.fixture
async def stubs(running: list[Replica]) -> AsyncIterator[list[push_pb2_grpc.PushServiceStub]]:
    await asyncio.gather(*(r.wait_serving() for r in running))
    channels = [internal_channel(f"127.0.0.1:{r.port}", INTERNAL_TOKEN) for r in running]
    try:
        yield [push_pb2_grpc.PushServiceStub(c) for c in channels]
    finally:
        for channel in channels:
            await channel.close()


async def submit(
    stub: push_pb2_grpc.PushServiceStub, store: str, kind: int, recipients: list[str], grant_id: str = ""
) -> tuple[grpc.StatusCode, str]:
    """What the gateway does: a draft, its audience, the seal."""
    try:
        draft = await stub.CreateDraft(
            p.CreateDraftRequest(
                store_id=store, account_id="m1", kind=kind, body="回来看看", grant_id=grant_id, facts=QUALIFIED
            ),
            timeout=60,
        )
        push_id = draft.push.push_id
        await stub.AppendAudience(
            p.AppendAudienceRequest(store_id=store, push_id=push_id, recipient_ids=recipients), timeout=60
        )
        sealed = await stub.SubmitDraft(p.SubmitDraftRequest(store_id=store, push_id=push_id), timeout=60)
        return grpc.StatusCode.OK, sealed.push.push_id
    except grpc.aio.AioRpcError as error:
        return error.code(), ""


async def test_p1_p2_p5_each_quota_spent_once_across_two_replicas(
    stubs: list[push_pb2_grpc.PushServiceStub], pg_url: str
) -> None:
    grant = (
        await stubs[0].GrantMassSend(
            p.GrantMassSendRequest(store_id="s1", audience_size=50, activity="official", granted_by="ops")
        )
    ).grant
    kinds = {
        p.PUSH_KIND_SUBSCRIPTION: "",
        p.PUSH_KIND_RECALL_TIER_1: "",
        p.PUSH_KIND_RECALL_TIER_2: "",
        p.PUSH_KIND_MASS_SEND: grant.grant_id,
    }
    attempts = 8
    calls = [
        submit(stubs[i % 2], "s1", kind, [f"c{j}" for j in range(20)], grant_id)
        for kind, grant_id in kinds.items()
        for i in range(attempts)
    ]
    calls += [submit(stubs[i % 2], "s2", p.PUSH_KIND_RECALL_TIER_1, ["c1"]) for i in range(4)]
    results = await asyncio.gather(*calls)

    by_kind = [results[k * attempts : (k + 1) * attempts] for k in range(len(kinds))]
    for (kind, _), outcome in zip(kinds.items(), by_kind, strict=True):
        codes = Counter(code for code, _ in outcome)
        assert codes[grpc.StatusCode.OK] == 1, (p.PushKind.Name(kind), codes)
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert Counter(code for code, _ in results[-4:])[grpc.StatusCode.OK] == 1  # another store's own quota

    # P6: a rejection gives the tier back, and again only one of many concurrent submissions gets it.
    tier1 = next(push_id for code, push_id in by_kind[1] if code is grpc.StatusCode.OK)
    await stubs[1].ReviewPush(p.ReviewPushRequest(push_id=tier1, decision=p.REVIEW_DECISION_REJECT, reviewer_id="ops"))
    again = await asyncio.gather(
        *(submit(stubs[i % 2], "s1", p.PUSH_KIND_RECALL_TIER_1, ["c1", "c2"]) for i in range(attempts))
    )
    assert Counter(code for code, _ in again)[grpc.StatusCode.OK] == 1

    conn = await asyncpg.connect(pg_url)
    try:
        slots = await conn.fetch("SELECT store_id, year, kind FROM recall_slots ORDER BY store_id, kind")
        used = await conn.fetch("SELECT push_id FROM grants WHERE push_id IS NOT NULL")
        pending = await conn.fetch(
            "SELECT kind, count(*) AS n FROM pushes WHERE state = 'pending_review' GROUP BY kind"
        )
    finally:
        await conn.close()
    assert [(s["store_id"], s["kind"]) for s in slots] == [
        ("s1", "recall_tier_1"),
        ("s1", "recall_tier_2"),
        ("s2", "recall_tier_1"),
    ]
    assert len(used) == 1
    assert {r["kind"]: r["n"] for r in pending} == {
        "subscription": 1,
        "recall_tier_1": 2,
        "recall_tier_2": 1,
        "mass_send": 1,
    }


async def delivered(pg_url: str, push_id: str) -> tuple[int, str]:
    conn = await asyncpg.connect(pg_url)
    try:
        row = await conn.fetchrow("SELECT delivered_count, state FROM pushes WHERE push_id = $1", push_id)
    finally:
        await conn.close()
    return int(row["delivered_count"]), str(row["state"])


async def open_transactions(pg_url: str) -> int:
    """Transactions the push replicas have open right now (a batch in flight)."""
    conn = await asyncpg.connect(pg_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def test_p7_100k_recipients_exactly_once_through_sigkill_mid_dispatch(
    stubs: list[push_pb2_grpc.PushServiceStub], running: list[Replica], pg_url: str, clock_file: Path
) -> None:
    first = stubs[0]
    draft = await first.CreateDraft(
        p.CreateDraftRequest(
            store_id="big", account_id="m1", kind=p.PUSH_KIND_RECALL_TIER_2, body="老客回访", facts=QUALIFIED
        )
    )
    assert draft.audience_limit == RECIPIENTS
    push_id = draft.push.push_id
    for start in range(0, RECIPIENTS, APPEND_CHUNK):
        ids = [f"r{i:06d}" for i in range(start, start + APPEND_CHUNK)]
        await stubs[start // APPEND_CHUNK % 2].AppendAudience(
            p.AppendAudienceRequest(store_id="big", push_id=push_id, recipient_ids=ids), timeout=60
        )
    sealed = (await first.SubmitDraft(p.SubmitDraftRequest(store_id="big", push_id=push_id))).push
    assert sealed.audience_size == RECIPIENTS
    approved = (
        await first.ReviewPush(
            p.ReviewPushRequest(push_id=push_id, decision=p.REVIEW_DECISION_APPROVE, reviewer_id="ops")
        )
    ).push
    send_at = approved.send_at.ToDatetime(tzinfo=UTC)
    assert send_at == START + timedelta(hours=24)

    began = time.monotonic()
    FileClock.write(clock_file, send_at)  # due now: both dispatchers start writing
    kills = []
    # One replica, then both at once: whichever holds the batch in flight dies with it.
    for victims, fraction in (((running[0],), 0.3), ((running[0], running[1]), 0.6)):
        while (await delivered(pg_url, push_id))[0] < RECIPIENTS * fraction:
            assert time.monotonic() - began < 120, "dispatch stalled"
            await asyncio.sleep(0.01)
        in_flight = await open_transactions(pg_url)
        for victim in victims:
            victim.kill()  # SIGKILL: no drain; a batch in flight rolls back with its connection
        kills.append(((await delivered(pg_url, push_id))[0], in_flight))
        for victim in victims:
            victim.start()
    while (state := await delivered(pg_url, push_id))[1] != "sent":
        assert time.monotonic() - began < 180, f"not sent: {state}"
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - began
    await asyncio.gather(*(r.wait_serving() for r in running))

    conn = await asyncpg.connect(pg_url)
    try:
        total, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT recipient_id) FROM deliveries WHERE push_id = $1", push_id
        )
        missing = await conn.fetchval(
            "SELECT count(*) FROM push_audience a WHERE a.push_id = $1 AND NOT EXISTS "
            "(SELECT 1 FROM deliveries d WHERE d.store_id = a.store_id AND d.push_id = a.push_id "
            "AND d.recipient_id = a.recipient_id)",
            push_id,
        )
        batch_sum, batch_count = await conn.fetchrow(
            "SELECT sum(size), count(*) FROM delivery_batches WHERE push_id = $1", push_id
        )
        # Every delivery lies in exactly one batch's range: the ledger has no gap and no overlap.
        covered = await conn.fetchval(
            "SELECT count(*) FROM deliveries d JOIN delivery_batches b ON b.store_id = d.store_id "
            "AND b.push_id = d.push_id AND d.recipient_id > b.after_recipient AND d.recipient_id <= b.last_recipient "
            "WHERE d.push_id = $1",
            push_id,
        )
        count = await conn.fetchval("SELECT delivered_count FROM pushes WHERE push_id = $1", push_id)
    finally:
        await conn.close()
    assert (total, distinct, missing) == (RECIPIENTS, RECIPIENTS, 0)
    assert (batch_sum, covered, count) == (RECIPIENTS, RECIPIENTS, RECIPIENTS)

    # A notification system following the ledger through a replica reads each recipient once.
    seen: Counter[str] = Counter()
    async for message in stubs[1].StreamDeliveries(
        p.StreamDeliveriesRequest(chunk_size=10_000),
        timeout=120,
        wait_for_ready=True,  # its channel may still be backing off from the kill
    ):
        assert message.push_id == push_id and message.body == "老客回访"
        seen.update(message.recipient_ids)
    assert len(seen) == RECIPIENTS and set(seen.values()) == {1}

    peaks = [r.peaks_mb for r in running]
    for replica in running:
        replica.peaks_mb.append(replica.peak_rss_mb())
    print(
        f"\n[P7] {RECIPIENTS:,} deliveries in {batch_count} batches, approval-due to sent in {elapsed:.1f}s "
        f"({RECIPIENTS / elapsed:,.0f}/s); SIGKILL at (written, transactions open): {kills}; "
        f"peak RSS per push process (MB): {[[round(m) for m in r.peaks_mb] for r in running]}"
    )
    assert all(m < MAX_PEAK_RSS_MB for r in running for m in r.peaks_mb), peaks

    for replica in running:
        assert replica.process is not None
        replica.process.send_signal(signal.SIGTERM)
    for replica in running:
        assert replica.process is not None
        assert replica.process.wait(20) == 0, replica.log.read_text()
