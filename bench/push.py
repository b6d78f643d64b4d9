"""Row 6, push: a full tier-2 recall push, from its approval to its last delivery, and the push process's memory.

The audience is the largest a recall push may have (the rules' tier-2
audience): old customers (P3) of one store who are not its fans. The store,
its fans and its revisit rate are reported through the gateway as an upstream
system would; the audience's orders, on just enough different days for each
customer, are written straight into the eligibility database (as
``bench.seed`` seeds members), since reporting them through the API would
take far longer than what the row measures. The push is then submitted
through the gateway, which streams the audience from eligibility into the
push service, and the stack's clock moves past the review delay (P6), so
that the approval makes the push due at once. The figure is the wall-clock
time from the approval call until the push reads as sent, which its last
batch of deliveries commits (P7); it includes the dispatcher's wait for its
next poll.

The row starts its own stack, with a clock file every process reads
(``QUN_CLOCK_FILE``) and, with ``--db postgres``, the eligibility and push
databases on PostgreSQL; the push process's peak memory (VmHWM) is then its
own work on this push, not left over from the other rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bench import bulk
from bench.shared import Row, Seeder, postgres_database
from cli import facts
from cli.stack import Stack
from gateway.auth import Principal, Role
from qun.common.v1 import facts_pb2
from qun.gateway.v1 import push_pb2, push_pb2_grpc
from services.common.clock import FileClock
from services.common.rules import PushRules, load_rules
from services.common.settings import database_url

if TYPE_CHECKING:
    from bench.run import Bench

TARGET_SECONDS = 10.0
TARGET_PEAK_RSS_MB = 300.0
POLL_SECONDS = 0.05
SUBMIT_TIMEOUT_SECONDS = 300.0
SENT_TIMEOUT_SECONDS = 300.0
# The gateway's deadline for each backend call in this row's stack (QUN_DOWNSTREAM_TIMEOUT_SECONDS).
# The submission reads the recall audience, its old customers who are not fans, from the store's
# orders: about a second on SQLite for this audience, more on a busy machine, which the gateway's
# default does not always cover. The row measures the dispatch; the submission only has to get
# through.
GATEWAY_CALL_SECONDS = 30.0
OPS = Principal("bench-reviewer", Role.OPS)


def recall_push(bench: Bench) -> Row:
    """Measures one recall push to the tier-2 audience on a stack of its own; returns the row."""
    clock_file = bench.work / f"clock-{uuid.uuid4().hex[:6]}"
    with contextlib.ExitStack() as cleanup:
        urls: dict[str, str] = {}
        if bench.args.db == "postgres":
            urls = {name: cleanup.enter_context(postgres_database(name)) for name in ("eligibility", "push")}
        stack = Stack(
            bench.work / f"data-{uuid.uuid4().hex[:6]}",
            database_urls=urls,
            fixed_ports=False,
            extra_env={
                "QUN_LOG_LEVEL": "WARNING",
                "QUN_CLOCK_FILE": str(clock_file),
                "QUN_DOWNSTREAM_TIMEOUT_SECONDS": str(GATEWAY_CALL_SECONDS),
            },
        )
        bench.progress("push: a stack of its own, with a clock file")
        stack.start()
        cleanup.callback(stack.stop)
        rules = load_rules(env=stack.env_for("push")).push
        audience = rules.tier2_audience
        seeder = Seeder(stack.gateway.address, stack.secrets["QUN_TOKEN_SECRET"])
        store_id, main_id = f"push-{seeder.run}", f"push-main-{seeder.run}"
        now = datetime.now(UTC)

        bench.progress(f"push: a store meeting recall tier 2, and {audience:,} old customers who are not its fans")
        seeder.report(tier2_store(store_id, main_id, now, rules))
        started = time.perf_counter()
        seed_old_customers(stack.env_for("eligibility"), store_id, audience, now, rules)
        seeded = time.perf_counter() - started

        bench.progress("push: submitting the recall push (the gateway fills its audience from eligibility)")
        stub = push_pb2_grpc.PushServiceStub(seeder.channel)
        main = seeder.auth(Principal(main_id, Role.STORE_MAIN, store_id))
        started = time.perf_counter()
        submitted = stub.SubmitPush(
            push_pb2.SubmitPushRequest(kind=push_pb2.PUSH_KIND_RECALL_TIER_2, title="回访", body="老顾客专享"),
            metadata=main,
            timeout=SUBMIT_TIMEOUT_SECONDS,
        ).push
        submit_seconds = time.perf_counter() - started
        if submitted.audience_size != audience:
            raise RuntimeError(f"the recall push reached {submitted.audience_size} recipients, not {audience}")

        # P6: approved once the review delay has passed, the push is due at its approval.
        submitted_at = submitted.submitted_at.ToDatetime(tzinfo=UTC)
        FileClock.write(clock_file, submitted_at + timedelta(hours=rules.review_delay_hours))
        bench.progress(f"push: approved; waiting for {audience:,} deliveries")
        started = time.perf_counter()
        stub.ReviewPush(
            push_pb2.ReviewPushRequest(push_id=submitted.push_id, decision=push_pb2.REVIEW_DECISION_APPROVE),
            metadata=seeder.auth(OPS),
            timeout=30,
        )
        sent = wait_sent(stub, submitted.push_id, main)
        seconds = time.perf_counter() - started
        peak_mb = peak_rss_mb(stack.processes["push"].pid)

    delivered = sent.delivered_count
    met = delivered == audience and seconds <= TARGET_SECONDS and peak_mb is not None and peak_mb <= TARGET_PEAK_RSS_MB
    shown_peak = f"{peak_mb:.0f} MB" if peak_mb is not None else "unknown"
    return Row(
        "6  push",
        f"{delivered:,} deliveries {seconds:.1f} s after approval; push peak RSS {shown_peak}",
        f"{audience:,} in ≤ {TARGET_SECONDS:.0f} s; ≤ {TARGET_PEAK_RSS_MB:.0f} MB",
        met,
        {
            "audience": audience,
            "delivered": delivered,
            "seconds": round(seconds, 2),
            "peak_rss_mb": None if peak_mb is None else round(peak_mb, 1),
            "seed_seconds": round(seeded, 2),
            "submit_seconds": round(submit_seconds, 2),
        },
    )


def tier2_store(store_id: str, main_id: str, now: datetime, rules: PushRules) -> list[facts_pb2.Fact]:
    """A store meeting recall tier 2's conditions (P2): enough old-customer fans (P3) and the revisit rate."""
    reported = facts.store(store_id, main_id, now, orders=0, level=None)
    for i in range(rules.tier2_min_old_customer_fans):
        fan = f"{store_id}-fan{i}"
        reported += [
            facts.order(f"{fan}-o{day}", store_id, fan, 1000, paid_at)
            for day, paid_at in enumerate(order_days(now, rules))
        ]
        reported.append(facts_pb2.Fact(follow=facts_pb2.FollowFact(store_id=store_id, consumer_id=fan, following=True)))
    reported.append(
        facts_pb2.Fact(
            revisit_rate=facts_pb2.RevisitRateFact(
                store_id=store_id, rate_bp=rules.tier2_min_revisit_rate_bp, computed_at=facts.ts(now)
            )
        )
    )
    return reported


def order_days(now: datetime, rules: PushRules) -> list[datetime]:
    """Order times on just enough different recent days to make an old customer (P3)."""
    return [now - timedelta(days=day + 1) for day in range(rules.old_customer_min_days)]


def seed_old_customers(env: dict[str, str], store_id: str, count: int, now: datetime, rules: PushRules) -> None:
    """Writes the orders of ``count`` old customers straight into the eligibility database, then recounts."""
    url = database_url(env, "eligibility")
    days = order_days(now, rules)
    orders = (
        (store_id, f"{store_id}-old{i}-o{day}", f"{store_id}-old{i}", 1000, paid_at)
        for i in range(count)
        for day, paid_at in enumerate(days)
    )
    asyncio.run(bulk.load(url, load_rules(env=env), orders=orders))


def wait_sent(
    stub: push_pb2_grpc.PushServiceStub, push_id: str, metadata: tuple[tuple[str, str], ...]
) -> push_pb2.Push:
    """Polls the push until it is sent; its state turns to sent in the transaction of its last batch."""
    deadline = time.monotonic() + SENT_TIMEOUT_SECONDS
    while True:
        push = stub.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=metadata, timeout=30).push
        if push.state == push_pb2.PUSH_STATE_SENT:
            return push
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"push {push_id} not sent after {SENT_TIMEOUT_SECONDS:.0f} s: {push.delivered_count} delivered"
            )
        time.sleep(POLL_SECONDS)


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory (VmHWM), or None where /proc is not there to read it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None
