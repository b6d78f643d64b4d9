"""D2: every number and list of the public API has a bound, documented, and checked before any backend."""

from __future__ import annotations

from pathlib import Path

from gateway.bounds import COUNT_LIMITS, INTEGER_TYPES, VALUE_LIMITS, BoundsCheck, bounded_fields, reference
from qun.common.v1 import facts_pb2
from qun.gateway.v1 import campaigns_pb2, gateway_pb2
from services.common.rules import load_rules
from tests.support.hostile import PUBLIC_RPCS

BOUNDS = load_rules(env={}).bounds
REFERENCE = Path(__file__).resolve().parents[3] / "docs" / "api-bounds.md"


def test_D2_every_number_and_list_of_every_public_request_has_a_bound() -> None:
    missing = []
    for rpc in PUBLIC_RPCS:
        for field in bounded_fields(rpc.request.DESCRIPTOR):
            table = COUNT_LIMITS if field.is_repeated else VALUE_LIMITS
            if field.full_name not in table:
                missing.append(f"{rpc}: {field.full_name}")
            if field.is_repeated and field.type in INTEGER_TYPES and field.full_name not in VALUE_LIMITS:
                missing.append(f"{rpc}: each entry of {field.full_name}")
    assert missing == []


def test_D2_every_bound_named_exists_and_the_table_has_no_stale_rows() -> None:
    reachable = {f.full_name for rpc in PUBLIC_RPCS for f in bounded_fields(rpc.request.DESCRIPTOR)}
    assert set(VALUE_LIMITS) | set(COUNT_LIMITS) <= reachable
    for limit in [*VALUE_LIMITS.values(), *COUNT_LIMITS.values()]:
        assert limit.ceiling(BOUNDS) > 0


def test_D2_the_api_reference_lists_every_bound() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == reference(BOUNDS), (
        "run: python -m gateway.bounds > docs/api-bounds.md"
    )


def test_D2_a_value_past_its_bound_names_the_field_and_the_bound() -> None:
    check = BoundsCheck(BOUNDS)
    pool = campaigns_pb2.PoolSpec(value_fen=2**63 - 1, count=1, per_user_limit=1)
    request = campaigns_pb2.CreateActivityRequest(red_packet_fountain=campaigns_pb2.FountainSpec(pools=[pool]))
    [violation] = check.violations(request)
    assert violation.field == "red_packet_fountain.pools[0].value_fen"
    assert (
        "100,000,000 (bounds.prize_fen)" in violation.description
        and "9,223,372,036,854,775,807" in violation.description
    )
    assert (
        check.violations(
            campaigns_pb2.CreateActivityRequest(
                red_packet_fountain=campaigns_pb2.FountainSpec(
                    pools=[campaigns_pb2.PoolSpec(value_fen=BOUNDS.prize_fen, count=BOUNDS.pool_prizes)]
                )
            )
        )
        == []
    )


def test_D2_the_value_just_past_the_largest_accepted_is_refused() -> None:
    check = BoundsCheck(BOUNDS)
    at = campaigns_pb2.FlashSaleSpec(flash_price_fen=BOUNDS.money_fen)
    past = campaigns_pb2.FlashSaleSpec(flash_price_fen=BOUNDS.money_fen + 1)
    assert check.violations(campaigns_pb2.CreateActivityRequest(flash_sale=at)) == []
    assert [v.field for v in check.violations(campaigns_pb2.CreateActivityRequest(flash_sale=past))] == [
        "flash_sale.flash_price_fen"
    ]
    restock = campaigns_pb2.RestockRequest(quantity=-1)
    assert [v.field for v in check.violations(restock)] == ["quantity"]


def test_D2_lists_facts_and_page_sizes() -> None:
    check = BoundsCheck(BOUNDS)
    order = campaigns_pb2.Order(store_red_packet_fen=[1] * (BOUNDS.order_entries + 1))
    [too_many] = check.violations(campaigns_pb2.PriceOrderRequest(order=order))
    assert too_many.field == "order.store_red_packet_fen" and "bounds.order_entries" in too_many.description
    order = campaigns_pb2.Order(store_red_packet_fen=[1, BOUNDS.prize_fen + 1])
    assert [v.field for v in check.violations(campaigns_pb2.PriceOrderRequest(order=order))] == [
        "order.store_red_packet_fen[1]"
    ]
    fact = facts_pb2.Fact(paid_order=facts_pb2.PaidOrderFact(order_id="o", amount_fen=BOUNDS.money_fen + 1))
    assert [v.field for v in check.violations(gateway_pb2.ReportFactsRequest(facts=[fact]))] == [
        "facts[0].paid_order.amount_fen"
    ]
    assert check.violations(gateway_pb2.ListGroupSetsRequest(page_size=2**31 - 1)) == []  # served as 500
    assert [v.field for v in check.violations(gateway_pb2.ListGroupSetsRequest(page_size=-1))] == ["page_size"]
