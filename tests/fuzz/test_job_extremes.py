"""D2 and D3 together: extreme-but-valid values, at every bound, through every job.

One store takes the largest value of every bound a caller may send — the
largest price and stock, a flash sale and a group buy at the largest price,
the most pools of the most prizes at the largest value, the largest order,
the most options of a vote, monthly figures at their ceilings, the longest
sleeping window, a mass-send grant of the largest audience — and a plain
store sits beside it. Then every job runs: expiry and refunds, end cards,
daily counts, monthly levels, sleeping customers, push dispatch (and draft
clean-up on its timer). Nothing may answer INTERNAL, no job may report a
store it could not settle (every value was valid), the plain store is
settled on time, and no process logs a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest

from gateway.auth import Principal, Role
from qun.gateway.v1 import campaigns_pb2 as pb
from qun.gateway.v1 import operations_pb2, operations_pb2_grpc
from qun.gateway.v1 import push_pb2 as p
from services.common.rules import load_rules
from tests.flows.test_campaigns import CASH, OPS, Shop, at, ts
from tests.flows.test_create_and_join import new_group
from tests.flows.test_push import Account
from tests.support import facts
from tests.support.hostile import database, log_problems
from tests.support.stack import GatewayClient, RunningStack, running_stack, unique

BOUNDS = load_rules(env={}).bounds
UPSTREAM = Principal("upstream-1", Role.UPSTREAM)
MAX_RATE_BP = 10_000


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("extremes"), database()) as running:
        yield running


async def shop_of(gw: GatewayClient, platform: RunningStack) -> tuple[Shop, Account]:
    """A store with a group-set (for campaigns) and the same store as a push account."""
    account = Account(gw, platform)
    store_id, main_id = account.store_id, account.main_id
    await gw.report(facts.store(store_id, main_id, platform.now))
    return Shop(gw, platform, store_id, main_id, await new_group(gw, store_id, main_id)), account


async def campaigns_at_their_bounds(shop: Shop, *, extreme: bool) -> tuple[str, str]:
    """Every campaign tool with its largest values (or modest ones): the flash sale's id and a member."""
    start = shop.platform.now
    expires = ts(start + timedelta(days=1))
    price = BOUNDS.money_fen if extreme else 1_000
    stock = BOUNDS.stock if extreme else 50
    prize, prizes = (BOUNDS.prize_fen, BOUNDS.pool_prizes) if extreme else (200, 5)
    pools = BOUNDS.pools_per_activity if extreme else 1
    item_id = await shop.item(stock=stock, price=price)
    sale = await shop.flash_sale(item_id, price=price)
    fountain = await shop.create(
        red_packet_fountain=pb.FountainSpec(
            pools=[
                pb.PoolSpec(kind=CASH, value_fen=prize, count=prizes, per_user_limit=prizes, expires_at=expires)
                for _ in range(pools)
            ]
        )
    )
    size = BOUNDS.group_buy_size if extreme else 2
    await shop.create(group_buy=pb.GroupBuySpec(item_id=item_id, group_price_fen=price, group_size=size))
    options = [f"选项{i}" for i in range(BOUNDS.vote_options if extreme else 2)]
    vote = await shop.create(voting=pb.VotingSpec(options=options))
    member = await shop.member()
    packets = [(await shop.claim(member, fountain.activity_id)).claim_id for _ in range(11 if extreme else 2)]
    quantity = BOUNDS.quantity if extreme else 1
    bought = await shop.buy(member, item_id, quantity, sale.activity_id, cash_red_packet_ids=packets[:10])
    assert bought.purchase.quantity == quantity
    await shop.api.Vote(
        pb.VoteRequest(store_id=shop.store_id, activity_id=vote.activity_id, option_index=len(options) - 1),
        metadata=shop.consumer(member),
    )
    return sale.activity_id, member


async def push_at_its_bound(account: Account, *, extreme: bool) -> str:
    """A mass-send grant of the largest audience (or a small one), submitted and approved: the push's id."""
    await account.old_customer_fans(2)  # fans: the mass-send audience
    grant = await account.stub.GrantMassSend(
        p.GrantMassSendRequest(
            request_id=unique("g"),
            store_id=account.store_id,
            audience_size=BOUNDS.audience if extreme else 10,
            activity="官方活动",
        ),
        metadata=account.ops,
    )
    push = await account.submit(p.PUSH_KIND_MASS_SEND, grant_id=grant.grant.grant_id)
    await account.review(push.push_id, p.REVIEW_DECISION_APPROVE)
    return push.push_id


async def test_D2_D3_extreme_but_valid_values_go_through_every_job_and_every_store_is_settled(
    platform: RunningStack,
) -> None:
    gw = platform.client()
    try:
        await run_every_job(gw, platform)
    finally:
        await gw.close()
    assert log_problems(platform) == []


async def run_every_job(gw: GatewayClient, platform: RunningStack) -> None:
    start = platform.now
    (extreme, extreme_push), (plain, plain_push) = [await shop_of(gw, platform) for _ in range(2)]
    extreme_sale, _ = await campaigns_at_their_bounds(extreme, extreme=True)
    plain_sale, _ = await campaigns_at_their_bounds(plain, extreme=False)
    ops_api = operations_pb2_grpc.GroupOperationsServiceStub(gw.channel)
    ops = gw.auth(OPS)
    month = platform.now.strftime("%Y-%m")
    for shop, extreme_values in ((extreme, True), (plain, False)):
        rate = MAX_RATE_BP if extreme_values else 1_500
        await ops_api.ReportMonthlyMetrics(
            operations_pb2.ReportMonthlyMetricsRequest(
                store_id=shop.store_id,
                month=month,
                open_rate_bp=rate,
                revisit_7d_bp=rate,
                conversion_bp=rate,
                merchant_messages=BOUNDS.monthly_messages if extreme_values else 20,
            ),
            metadata=gw.auth(UPSTREAM),
        )
        await ops_api.SetSleepingPlan(
            operations_pb2.SetSleepingPlanRequest(
                store_id=shop.store_id,
                enabled=True,
                inactivity_days=BOUNDS.inactivity_days if extreme_values else 30,
            ),
            metadata=shop.owner,
        )
    pushes = {
        extreme_push.store_id: (extreme_push, await push_at_its_bound(extreme_push, extreme=True)),
        plain_push.store_id: (plain_push, await push_at_its_bound(plain_push, extreme=False)),
    }

    try:
        # A day on: every activity ended, every packet expired, every push's 24 hours passed.
        await at(platform, start + timedelta(days=1, minutes=1))
        expiry = await extreme.api.RunExpiry(pb.RunExpiryRequest(), metadata=ops)
        assert list(expiry.failures) == []
        for shop, sale in ((plain, plain_sale), (extreme, extreme_sale)):
            ledger = await shop.api.ListRefunds(pb.ListRefundsRequest(store_id=shop.store_id), metadata=shop.owner)
            assert ledger.refunds, f"store {shop.store_id} got no refunds"
            results = await shop.api.GetFlashSaleResults(
                pb.GetFlashSaleResultsRequest(store_id=shop.store_id, activity_id=sale), metadata=shop.owner
            )
            assert results.HasField("end_card"), f"store {shop.store_id} got no end card (M6)"
        for account, push_id in pushes.values():
            sent = await account.wait_sent(push_id)
            assert sent.delivered_count >= 1

        # Into the next month: daily counts, the month's levels, a sleeping pass.
        next_month = (start.replace(day=1) + timedelta(days=32)).replace(day=2)
        await at(platform, next_month)
        for job, period in (
            (operations_pb2.JOB_DAILY_COUNTS, (next_month - timedelta(days=1)).strftime("%Y-%m-%d")),
            (operations_pb2.JOB_LEVELS, month),
            (operations_pb2.JOB_SLEEPING, ""),
        ):
            ran = await ops_api.RunJob(operations_pb2.RunJobRequest(job=job, period=period), metadata=ops)
            assert list(ran.failures) == [], (job, ran.summary)
        for shop in (extreme, plain):
            capacity = await ops_api.GetCapacity(
                operations_pb2.GetCapacityRequest(store_id=shop.store_id), metadata=shop.owner
            )
            holds = next_month.strftime("%Y-%m")  # T8: a month's level holds from the next month's 1st
            assert holds in {h.month for h in capacity.history}, f"store {shop.store_id} got no level from {month}"
    except grpc.aio.AioRpcError as error:
        pytest.fail(f"a call at the bounds answered {error.code().name}: {error.details()}")
    finally:
        await at(platform, start)
