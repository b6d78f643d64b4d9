"""The eligibility service over a real loopback socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from qun.common.v1 import facts_pb2 as f
from qun.common.v1 import groups_pb2 as g
from qun.eligibility.v1 import eligibility_pb2 as e
from qun.eligibility.v1 import eligibility_pb2_grpc
from services.common import passwords
from services.common.client import internal_channel
from services.common.clock import ManualClock
from services.common.errors import error_info, failures_of, field_violations, rule_ids, status_from_error
from services.common.rules import Rules
from services.common.server import Server
from services.eligibility.app import EligibilityApp
from tests.integration.eligibility import facts as F
from tests.support.inprocess import migrate, serve, settings_for

NOW = datetime(2026, 8, 24, 12, 0, tzinfo=UTC)
Stub = eligibility_pb2_grpc.EligibilityServiceStub


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def stub(db_url: str, rules: Rules, clock: ManualClock) -> AsyncIterator[Stub]:
    async with serve(EligibilityApp, db_url, rules=rules, clock=clock) as channel:
        yield Stub(channel)


async def check_store(stub: Stub, account_id: str) -> e.CheckCreateResponse:
    return await stub.CheckCreate(e.CheckCreateRequest(account_id=account_id, kind=g.GROUP_KIND_STORE))


async def check_live(stub: Stub, account_id: str) -> e.CheckCreateResponse:
    return await stub.CheckCreate(e.CheckCreateRequest(account_id=account_id, kind=g.GROUP_KIND_LIVE))


def reasons(verdict: object) -> list[tuple[str, str]]:
    return [(x.rule_id, x.reason) for x in failures_of(verdict)]  # type: ignore[arg-type]


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


SPEND = g.Threshold(spend=g.SpendThreshold(min_spend_fen=50_000))
FOLLOW = g.Threshold(follow=g.FollowThreshold())
IRON = g.Threshold(fan_level=g.FanLevelThreshold(min_level=g.FAN_LEVEL_IRON))


# --- creating (E) -------------------------------------------------------------------


async def test_E2_E3_store_creation_counts_the_window_and_sees_levels_at_T_plus_2(
    stub: Stub, clock: ManualClock
) -> None:
    window_start = NOW - timedelta(days=30)
    level_updated = NOW - timedelta(days=2) + timedelta(hours=5)  # 01:00 on Aug 23 in China
    visible_from = datetime(2026, 8, 24, 16, 0, tzinfo=UTC)  # 00:00 on Aug 25 there: T+2 in marketplace days (D1)
    await stub.IngestFacts(
        F.ingest(
            F.account("main-1", f.ACCOUNT_ROLE_STORE_MAIN, "store-1"),
            F.store("store-1", "main-1"),
            *(F.order(f"o{i}", "store-1", "c1", 1000, NOW - timedelta(days=1)) for i in range(28)),
            F.order("edge", "store-1", "c1", 1000, window_start),  # counts: the window's first instant
            F.order("early", "store-1", "c1", 1000, window_start - timedelta(seconds=1)),  # does not count
            F.order("ahead", "store-1", "c1", 1000, NOW + timedelta(hours=1)),  # not paid yet as of now
            F.order("other", "store-2", "c1", 1000, NOW - timedelta(days=1)),  # another store's
            F.content_level("store-1", 0, NOW - timedelta(days=9)),
            F.content_level("store-1", 1, level_updated),
        )
    )
    refused_before = counter("qun_eligibility_checks_total", check="create", outcome="refused")

    response = await check_store(stub, "main-1")
    assert reasons(response.verdict) == [("E2", "NOT_ENOUGH_PAID_ORDERS"), ("E2", "CONTENT_LEVEL_NOT_YET_VISIBLE")]
    orders, level = failures_of(response.verdict)
    assert orders.message == "orders_30d 29 < 30"
    assert orders.figures["paid_orders"] == "29"
    assert level.figures["visible_from"] == visible_from.isoformat()
    assert (response.owner_account_id, response.store_id) == ("main-1", "store-1")
    assert counter("qun_eligibility_checks_total", check="create", outcome="refused") == refused_before + 1

    clock.set(visible_from)  # +4 h: "edge" leaves the window, "ahead" is now paid
    response = await check_store(stub, "main-1")
    assert reasons(response.verdict) == [("E2", "NOT_ENOUGH_PAID_ORDERS")]
    assert failures_of(response.verdict)[0].figures["paid_orders"] == "29"

    await stub.IngestFacts(F.ingest(F.order("o-30", "store-1", "c2", 500, clock.now())))
    response = await check_store(stub, "main-1")
    assert response.verdict.allowed
    assert not response.creator_becomes_admin


async def test_E1_E6_sub_account_of_a_closed_store_hears_every_failure(stub: Stub) -> None:
    await stub.IngestFacts(
        F.ingest(
            F.account("sub-1", f.ACCOUNT_ROLE_STORE_SUB, "store-1"),
            F.store("store-1", "main-1", operating_normally=False),
        )
    )
    response = await check_store(stub, "sub-1")
    assert reasons(response.verdict) == [
        ("E1", "NOT_STORE_MAIN_ACCOUNT"),
        ("E2", "STORE_NOT_OPERATING"),
        ("E2", "NOT_ENOUGH_PAID_ORDERS"),
        ("E2", "CONTENT_LEVEL_TOO_LOW"),
    ]
    assert response.owner_account_id == "main-1"


async def test_E4_live_creation_for_streamers(stub: Stub) -> None:
    await stub.IngestFacts(
        F.ingest(
            F.account("host-1", f.ACCOUNT_ROLE_STREAMER, broadcast_permitted=True),
            F.account("host-2", f.ACCOUNT_ROLE_STREAMER, "store-1", broadcast_permitted=True),
            F.account("host-3", f.ACCOUNT_ROLE_STREAMER),
            F.account("main-1", f.ACCOUNT_ROLE_STORE_MAIN, "store-1"),
            F.store("store-1", "main-1"),
        )
    )
    independent = await check_live(stub, "host-1")
    assert independent.verdict.allowed
    assert (independent.owner_account_id, independent.streamer_id, independent.store_id) == ("host-1", "host-1", "")
    assert not independent.creator_becomes_admin

    of_store = await check_live(stub, "host-2")
    assert of_store.verdict.allowed
    assert (of_store.owner_account_id, of_store.streamer_id, of_store.store_id) == ("main-1", "host-2", "store-1")
    assert of_store.creator_becomes_admin

    assert reasons((await check_live(stub, "host-3")).verdict) == [("E4", "NOT_PERMITTED_TO_BROADCAST")]
    assert reasons((await check_live(stub, "main-1")).verdict) == [("E4", "NOT_A_STREAMER")]


# --- joining (C) ----------------------------------------------------------------------


async def test_C14_store_join_names_every_failed_rule_then_admits(stub: Stub) -> None:
    spend_start = NOW - timedelta(days=365)
    await stub.IngestFacts(
        F.ingest(
            F.consumer("c1", own_store_id="store-9"),
            F.score("c1", 400),
            F.merchant_blacklist("store-1", "c1"),
            F.order("a", "store-1", "c1", 30_000, spend_start),  # counts: the window's first instant
            F.order("b", "store-1", "c1", 100_000, spend_start - timedelta(seconds=1)),  # a year and a second ago
            F.order("c", "store-2", "c1", 100_000, NOW - timedelta(days=1)),  # another store
            F.order("d", "store-1", "c1", 100_000, NOW + timedelta(hours=1)),  # not paid yet as of now
        )
    )
    refused = await stub.CheckJoin(F.store_join("c1", "store-1", SPEND))
    assert rule_ids(failures_of(refused.verdict)) == ["C1", "C2", "C5", "C8", "C9"]
    assert refused.below_score_bar
    spend = failures_of(refused.verdict)[-1]
    assert (spend.figures["spend_yuan"], spend.figures["required_yuan"]) == ("300.00", "500.00")

    await stub.IngestFacts(
        F.ingest(
            F.consumer("c1"),  # the account fact changes: no longer a seller
            F.real_name("c1"),
            F.score("c1", 401),
            F.merchant_blacklist("store-1", "c1", listed=False),
            F.order("e", "store-1", "c1", 20_000, NOW - timedelta(days=3)),
        )
    )
    admitted = await stub.CheckJoin(F.store_join("c1", "store-1", SPEND))
    assert admitted.verdict.allowed, failures_of(admitted.verdict)
    assert not admitted.below_score_bar


async def test_C2_C3_exempt_owner_joins_below_the_bar_but_is_flagged(stub: Stub) -> None:
    await stub.IngestFacts(F.ingest(F.consumer("c1"), F.real_name("c1"), F.follow("store-1", "c1")))
    exempt = await stub.CheckJoin(F.store_join("c1", "store-1", FOLLOW, exempt_from_score=True))
    assert exempt.verdict.allowed
    assert exempt.below_score_bar  # no 淘气值 fact: 0
    assert reasons((await stub.CheckJoin(F.store_join("c1", "store-1", FOLLOW))).verdict) == [
        ("C2", "TAOQI_SCORE_TOO_LOW")
    ]


async def test_C9_follow_crowd_and_password_thresholds(stub: Stub) -> None:
    await stub.IngestFacts(
        F.ingest(F.consumer("c1"), F.real_name("c1"), F.score("c1", 1200), F.follow("store-1", "c1", False))
    )
    crowd = g.Threshold(crowd=g.CrowdThreshold(crowd_id="vip"))
    password = g.Threshold(password=g.PasswordThreshold())
    digest = passwords.digest("芝麻开门")

    assert reasons((await stub.CheckJoin(F.store_join("c1", "store-1", FOLLOW))).verdict) == [("C9", "NOT_FOLLOWING")]
    assert reasons((await stub.CheckJoin(F.store_join("c1", "store-1", crowd))).verdict) == [("C9", "NOT_IN_CROWD")]
    wrong = F.store_join("c1", "store-1", password, password_digest=digest, supplied_password="芝麻")
    assert reasons((await stub.CheckJoin(wrong)).verdict) == [("C9", "WRONG_PASSWORD")]

    await stub.IngestFacts(F.ingest(F.follow("store-1", "c1"), F.crowd("store-1", "vip", "c1")))
    assert (await stub.CheckJoin(F.store_join("c1", "store-1", FOLLOW))).verdict.allowed
    assert (await stub.CheckJoin(F.store_join("c1", "store-1", crowd))).verdict.allowed
    right = F.store_join("c1", "store-1", password, password_digest=digest, supplied_password="芝麻开门")
    assert (await stub.CheckJoin(right)).verdict.allowed
    # The crowd is the store's own: another store's crowd of the same name does not count.
    assert not (await stub.CheckJoin(F.store_join("c1", "store-2", crowd))).verdict.allowed


async def test_C10_live_join_by_fan_level(stub: Stub) -> None:
    await stub.IngestFacts(
        F.ingest(
            F.consumer("c1"),
            F.real_name("c1"),
            F.score("c1", 900),
            F.merchant_blacklist("store-1", "c1"),  # C5 needs the group's store; this group has none
        )
    )
    none = await stub.CheckJoin(F.live_join("c1", "host-1", g.FAN_LEVEL_IRON))
    assert reasons(none.verdict) == [("C10", "FAN_LEVEL_TOO_LOW")]
    assert failures_of(none.verdict)[0].figures["fan_level"] == "NONE"

    await stub.IngestFacts(F.ingest(F.fan_level("host-1", "c1", g.FAN_LEVEL_DIAMOND)))
    assert (await stub.CheckJoin(F.live_join("c1", "host-1", g.FAN_LEVEL_IRON))).verdict.allowed
    assert (await stub.CheckJoin(F.live_join("c1", "host-1", g.FAN_LEVEL_DIAMOND))).verdict.allowed
    beloved = await stub.CheckJoin(F.live_join("c1", "host-1", g.FAN_LEVEL_BELOVED))
    assert reasons(beloved.verdict) == [("C10", "FAN_LEVEL_TOO_LOW")]
    # Fan levels are per streamer.
    assert not (await stub.CheckJoin(F.live_join("c1", "host-2", g.FAN_LEVEL_IRON))).verdict.allowed


async def test_C6_escalates_at_the_third_merchant_until_the_platform_lifts_it(stub: Stub) -> None:
    await stub.IngestFacts(F.ingest(F.consumer("c1"), F.real_name("c1"), F.score("c1", 800), F.follow("s-0", "c1")))

    async def c4() -> list[str]:
        response = await stub.CheckJoin(F.store_join("c1", "s-0", FOLLOW))
        return [x.message for x in failures_of(response.verdict) if x.rule_id == "C4"]

    await stub.IngestFacts(F.ingest(F.merchant_blacklist("s-1", "c1"), F.merchant_blacklist("s-2", "c1")))
    assert await c4() == []
    await stub.IngestFacts(F.ingest(F.merchant_blacklist("s-3", "c1")))
    assert await c4() == ["on the platform blacklist (C6: blacklisted by 3 merchants)"]

    await stub.IngestFacts(F.ingest(F.merchant_blacklist("s-4", "c1")))
    await stub.IngestFacts(F.ingest(F.merchant_blacklist("s-4", "c1", listed=False)))
    assert await c4() != [], "an escalated entry stays when a merchant lifts its own"

    await stub.IngestFacts(F.ingest(F.platform_blacklist("c1", listed=False)))
    assert await c4() == []
    # Re-sent listings change nothing, though 3 merchants still list the consumer …
    await stub.IngestFacts(F.ingest(*(F.merchant_blacklist(f"s-{n}", "c1") for n in (1, 2, 3))))
    assert await c4() == []
    # … a new listing is counted again.
    await stub.IngestFacts(F.ingest(F.merchant_blacklist("s-4", "c1")))
    assert await c4() == ["on the platform blacklist (C6: blacklisted by 4 merchants)"]


async def test_C7_escalates_the_inviter_whichever_fact_comes_first_and_up_the_chain(stub: Stub) -> None:
    invitees = [f"i{n}" for n in range(6)]
    await stub.IngestFacts(
        F.ingest(
            *(F.consumer(x) for x in ["boss", "top", *invitees]),
            # Three blacklisted before they are reported as invited …
            *(F.merchant_blacklist("s-1", x) for x in invitees[:3]),
            *(F.invitation("boss", x) for x in invitees),
            # … and "top" invited "boss" and five accounts that are already blacklisted.
            F.invitation("top", "boss"),
            *(F.invitation("top", f"t{n}") for n in range(5)),
            *(F.platform_blacklist(f"t{n}") for n in range(5)),
        )
    )
    await stub.IngestFacts(F.ingest(*(F.merchant_blacklist("s-2", x) for x in invitees[3:5])))  # … two after

    async def c4(consumer: str) -> list[str]:
        response = await stub.CheckJoin(F.store_join(consumer, "s-0", FOLLOW, exempt_from_score=True))
        return [x.message for x in failures_of(response.verdict) if x.rule_id == "C4"]

    assert await c4("boss") == []  # 5 blacklisted invitees is not more than 5
    assert await c4("top") == []
    await stub.IngestFacts(F.ingest(F.merchant_blacklist("s-2", invitees[5])))
    assert await c4("boss") == ["on the platform blacklist (C7: 6 of the accounts it invited are blacklisted)"]
    assert await c4("top") == ["on the platform blacklist (C7: 6 of the accounts it invited are blacklisted)"]

    # The invitation can be the fact that tips the count, too.
    recruits = [f"r{n}" for n in range(6)]
    await stub.IngestFacts(
        F.ingest(
            F.consumer("boss2"),
            *(F.merchant_blacklist("s-1", x) for x in recruits),
            *(F.invitation("boss2", x) for x in recruits[:5]),
        )
    )
    assert await c4("boss2") == []
    await stub.IngestFacts(F.ingest(F.invitation("boss2", recruits[5])))
    assert await c4("boss2") == ["on the platform blacklist (C7: 6 of the accounts it invited are blacklisted)"]


# --- ingestion ---------------------------------------------------------------------------


async def test_a_bad_batch_names_every_bad_field_and_stores_nothing(stub: Stub) -> None:
    bad = F.ingest(
        F.consumer("fine-1"),
        F.order("o1", "store-1", "c1", 0, NOW),
        F.score("c1", 100_001),
        F.content_level("store-1", 7, NOW),
        f.Fact(paid_order=f.PaidOrderFact(order_id="o2", store_id="store-1", consumer_id="c1", amount_fen=1)),
        F.order("o3", "store-1", "c1", 1, NOW + timedelta(days=1, seconds=1)),
        F.merchant_blacklist("", "c1"),
        f.Fact(blacklist=f.BlacklistFact(scope=f.BLACKLIST_SCOPE_PLATFORM, store_id="store-1", consumer_id="c1")),
        F.account("sub-1", f.ACCOUNT_ROLE_STORE_SUB),
        F.account("who", 99),
        F.account("bad id!", f.ACCOUNT_ROLE_CONSUMER),
        F.invitation("c1", "c1"),
        f.Fact(),
    )
    error = await rpc_error(stub.IngestFacts(bad))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = status_from_error(error)
    info = error_info(status)  # type: ignore[arg-type]
    assert info is not None and info.reason == "INVALID_ARGUMENT"
    assert [v.field for v in field_violations(status)] == [
        "facts[1].paid_order.amount_fen",
        "facts[2].taoqi_score.score",
        "facts[3].content_level.level",
        "facts[4].paid_order.paid_at",
        "facts[5].paid_order.paid_at",
        "facts[6].blacklist.store_id",
        "facts[7].blacklist.store_id",
        "facts[8].account.store_id",
        "facts[9].account.role",
        "facts[10].account.account_id",
        "facts[11].invitation.invitee_id",
        "facts[12]",
    ]
    missing = await rpc_error(stub.GetAccount(e.GetAccountRequest(account_id="fine-1")))
    assert missing.code() is grpc.StatusCode.NOT_FOUND

    for request, description in ((F.ingest(), "at least one"), (F.ingest(*[F.consumer("x")] * 1001), "at most 1000")):
        error = await rpc_error(stub.IngestFacts(request))
        [violation] = field_violations(status_from_error(error))
        assert violation.field == "facts" and description in violation.description


async def test_re_ingesting_facts_changes_nothing_and_orders_upsert_by_id(stub: Stub) -> None:
    batch = F.ingest(
        F.account("main-1", f.ACCOUNT_ROLE_STORE_MAIN, "store-1"),
        F.store("store-1", "main-1"),
        F.content_level("store-1", 2, NOW - timedelta(days=5)),
        *(F.order(f"o{i}", "store-1", "c1", 1000, NOW - timedelta(days=2)) for i in range(20)),
        F.order("o0", "store-1", "c1", 5000, NOW - timedelta(days=2)),  # the same order again: last one wins
    )
    orders_before = counter("qun_eligibility_facts_total", kind="paid_order")
    for _ in range(3):
        assert (await stub.IngestFacts(batch)).applied == len(batch.facts)
    assert counter("qun_eligibility_facts_total", kind="paid_order") == orders_before + 3 * 21
    response = await check_store(stub, "main-1")
    assert failures_of(response.verdict)[0].figures["paid_orders"] == "20"

    await stub.IngestFacts(F.ingest(F.consumer("c1"), F.real_name("c1"), F.score("c1", 500)))
    threshold = g.Threshold(spend=g.SpendThreshold(min_spend_fen=24_001))
    spend = await stub.CheckJoin(F.store_join("c1", "store-1", threshold))
    assert failures_of(spend.verdict)[0].figures["spend_fen"] == "24000"  # 19 × 10 + 50 yuan

    account = (await stub.GetAccount(e.GetAccountRequest(account_id="main-1"))).account
    assert account == f.AccountFact(account_id="main-1", role=f.ACCOUNT_ROLE_STORE_MAIN, store_id="store-1")


# --- errors and credentials ---------------------------------------------------------------


async def test_unknown_accounts_are_not_found(stub: Stub) -> None:
    calls = [
        stub.GetAccount(e.GetAccountRequest(account_id="ghost")),
        check_store(stub, "ghost"),
        stub.CheckJoin(F.store_join("ghost", "store-1", FOLLOW)),
    ]
    for call in calls:
        error = await rpc_error(call)
        assert error.code() is grpc.StatusCode.NOT_FOUND
        info = error_info(status_from_error(error))  # type: ignore[arg-type]
        assert info is not None and info.metadata["name"] == "ghost"


async def test_check_requests_are_validated(stub: Stub) -> None:
    cases = [
        (stub.CheckCreate(e.CheckCreateRequest(account_id="a1")), ["kind"]),
        (stub.CheckCreate(e.CheckCreateRequest(account_id="", kind=7)), ["account_id", "kind"]),  # type: ignore[arg-type]
        (stub.CheckJoin(e.CheckJoinRequest(consumer_id="c1", kind=g.GROUP_KIND_STORE, store_id="s1")), ["threshold"]),
        (
            stub.CheckJoin(
                e.CheckJoinRequest(
                    consumer_id="c1",
                    kind=g.GROUP_KIND_LIVE,
                    streamer_id="h1",
                    threshold=FOLLOW,
                )
            ),
            ["threshold"],
        ),
        (stub.CheckJoin(F.store_join("c1", "s1", IRON)), ["threshold"]),
        (stub.CheckJoin(F.live_join("c1", "", g.FAN_LEVEL_NONE)), ["streamer_id", "threshold.fan_level.min_level"]),
        (stub.CheckJoin(F.store_join("c1", "s1", g.Threshold(password=g.PasswordThreshold()))), ["password_digest"]),
        (
            stub.CheckJoin(F.store_join("c1", "", g.Threshold(spend=g.SpendThreshold()))),
            ["store_id", "threshold.spend.min_spend_fen"],
        ),
    ]
    for call, fields in cases:
        error = await rpc_error(call)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in field_violations(status_from_error(error))] == fields


async def test_calls_without_the_internal_token_are_unauthenticated(tmp_path: Path, rules: Rules) -> None:
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    await migrate("eligibility", url)
    server = Server(EligibilityApp(settings_for("eligibility", url), rules), serve_metrics_http=False)
    port = await server.start()
    try:
        for channel in (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}"),
            internal_channel(f"127.0.0.1:{port}", "not-the-internal-token-0000"),
        ):
            async with channel:
                error = await rpc_error(Stub(channel).GetAccount(e.GetAccountRequest(account_id="a1")))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop()


# --- concurrency on PostgreSQL -------------------------------------------------------------


@pytest.mark.postgres
async def test_C6_concurrent_blacklistings_by_3_merchants_still_escalate(
    pg_url: str, rules: Rules, clock: ManualClock
) -> None:
    consumers = [f"c{n}" for n in range(8)]
    async with serve(EligibilityApp, pg_url, rules=rules, clock=clock) as channel:
        stub = Stub(channel)
        await stub.IngestFacts(F.ingest(*(F.consumer(c) for c in consumers)))
        # Every blacklisting its own call, all at once: 3 merchants × 8 consumers.
        await asyncio.gather(
            *(stub.IngestFacts(F.ingest(F.merchant_blacklist(f"s-{m}", c))) for m in range(3) for c in consumers)
        )
        for c in consumers:
            response = await stub.CheckJoin(F.store_join(c, "s-9", FOLLOW, exempt_from_score=True))
            assert "C4" in rule_ids(failures_of(response.verdict)), c


@pytest.mark.postgres
async def test_C7_concurrent_invitations_and_blacklistings_still_escalate(
    pg_url: str, rules: Rules, clock: ManualClock
) -> None:
    inviters = [f"boss{n}" for n in range(3)]
    async with serve(EligibilityApp, pg_url, rules=rules, clock=clock) as channel:
        stub = Stub(channel)
        await stub.IngestFacts(F.ingest(*(F.consumer(c) for c in inviters)))
        calls = []
        for boss in inviters:
            for n in range(6):
                invitee = f"{boss}-i{n}"
                calls.append(stub.IngestFacts(F.ingest(F.invitation(boss, invitee))))
                calls.append(stub.IngestFacts(F.ingest(F.merchant_blacklist(f"s-{n}", invitee))))
        await asyncio.gather(*calls)
        for boss in inviters:
            response = await stub.CheckJoin(F.store_join(boss, "s-9", FOLLOW, exempt_from_score=True))
            assert "C4" in rule_ids(failures_of(response.verdict)), boss
