"""The campaigns rules alone: M1–M13 as plain functions over plain values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.campaigns import rules as c
from services.campaigns.rules import ActivityKind, ItemFacts, Platform, PoolStanding, PriceRecord, Window
from services.common.rules import Rules

T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)


def ids(failures: list[c.Failure]) -> list[tuple[str, str]]:
    return [(f.rule_id, f.reason) for f in failures]


def item(sku_count: int = 1, low: int = 1000, high: int = 1000, stock: int = 10) -> ItemFacts:
    return ItemFacts(Platform.TAOBAO, sku_count, low, high, stock)


def window(start_min: int, end_min: int) -> Window:
    return Window(T0 + timedelta(minutes=start_min), T0 + timedelta(minutes=end_min))


# -- M1 --------------------------------------------------------------------------------------


def test_M1_single_sku_one_price_items_may_be_flash_sold() -> None:
    assert c.flash_sale_item_failures(item()) == []


def test_M1_multi_sku_and_price_range_are_both_named() -> None:
    assert ids(c.flash_sale_item_failures(item(sku_count=3))) == [("M1", "MULTI_SKU_ITEM")]
    assert ids(c.flash_sale_item_failures(item(low=900, high=1200))) == [("M1", "PRICE_RANGE_ITEM")]
    both = c.flash_sale_item_failures(item(sku_count=2, low=900, high=1200))
    assert ids(both) == [("M1", "MULTI_SKU_ITEM"), ("M1", "PRICE_RANGE_ITEM")]
    assert both[0].figures["sku_count"] == "2" and both[1].figures["price_max_fen"] == "1200"


# -- M2 --------------------------------------------------------------------------------------


def test_M2_a_sale_takes_at_most_the_stock() -> None:
    assert c.stock_failures(5, 5) == []
    assert ids(c.stock_failures(5, 6)) == [("M2", "NOT_ENOUGH_STOCK")]
    refused = c.stock_failures(0, 1)
    assert ids(refused) == [("M2", "SOLD_OUT")] and refused[0].figures == {"stock": "0", "quantity": "1"}


# -- M3 --------------------------------------------------------------------------------------


def test_M3_taobao_flash_price_is_not_the_30_day_lowest_but_counts_for_juhuasuan_and_taoqianggou() -> None:
    assert dict(c.price_records(Platform.TAOBAO)) == {
        PriceRecord.MARKET_30_DAY: False,
        PriceRecord.JUHUASUAN: True,
        PriceRecord.TAOQIANGGOU: True,
    }


def test_M3_tmall_flash_price_is_not_the_historical_lowest_but_the_30_day_promotional_one() -> None:
    assert dict(c.price_records(Platform.TMALL)) == {
        PriceRecord.HISTORICAL: False,
        PriceRecord.PROMOTIONAL_30_DAY: True,
        PriceRecord.JUHUASUAN: True,
        PriceRecord.TAOQIANGGOU: True,
    }


# -- M4, M8 ----------------------------------------------------------------------------------


def test_M4_the_flash_price_stacks_with_cash_and_store_red_packets_and_a_store_coupon() -> None:
    pricing = c.price_order(
        item_price_fen=10_000,
        flash_price_fen=6_000,
        quantity=2,
        cash_red_packets=[100, 200],
        store_red_packets=[500],
        store_coupons=[1_000],
    )
    assert pricing.flash_price and pricing.unit_price_fen == 6_000 and pricing.subtotal_fen == 12_000
    assert (pricing.cash_red_packet_fen, pricing.store_red_packet_fen, pricing.store_coupon_fen) == (300, 500, 1_000)
    assert pricing.total_fen == 12_000 - 300 - 500 - 1_000


def test_M4_without_a_flash_sale_the_item_price_applies_and_the_total_never_goes_below_zero() -> None:
    pricing = c.price_order(item_price_fen=1_000, flash_price_fen=None, quantity=1, store_coupons=[5_000])
    assert not pricing.flash_price and pricing.unit_price_fen == 1_000 and pricing.total_fen == 0


def test_M8_ten_cash_red_packets_and_one_coupon_stack(rules: Rules) -> None:
    assert c.order_count_failures(rules, 10, 1) == []


def test_M8_eleven_cash_red_packets_or_two_coupons_are_refused_together(rules: Rules) -> None:
    assert ids(c.order_count_failures(rules, 11, 0)) == [("M8", "TOO_MANY_CASH_RED_PACKETS")]
    both = c.order_count_failures(rules, 11, 2)
    assert ids(both) == [("M8", "TOO_MANY_CASH_RED_PACKETS"), ("M8", "TOO_MANY_STORE_COUPONS")]
    assert both[0].figures == {"cash_red_packets": "11", "cap": "10"}


# -- M5, M6 ----------------------------------------------------------------------------------


def test_M5_only_members_buy_at_the_flash_price() -> None:
    assert c.membership_failures(ActivityKind.FLASH_SALE, True) == []
    assert ids(c.membership_failures(ActivityKind.FLASH_SALE, False)) == [("M5", "NOT_GROUP_MEMBER")]
    assert ids(c.membership_failures(ActivityKind.RED_PACKET_FOUNTAIN, False)) == [("M7", "NOT_GROUP_MEMBER")]


def test_M6_a_sale_runs_from_its_start_until_its_end_or_until_it_was_ended() -> None:
    sale = window(0, 60)
    assert c.running_failures(ActivityKind.FLASH_SALE, sale, None, T0) == []
    early = c.running_failures(ActivityKind.FLASH_SALE, sale, None, T0 - timedelta(seconds=1))
    assert ids(early) == [("M6", "ACTIVITY_NOT_STARTED")]
    assert ids(c.running_failures(ActivityKind.FLASH_SALE, sale, None, T0 + timedelta(minutes=60))) == [
        ("M6", "ACTIVITY_ENDED")
    ]
    ended = c.running_failures(ActivityKind.FLASH_SALE, sale, T0 + timedelta(minutes=5), T0 + timedelta(minutes=6))
    assert ids(ended) == [("M6", "ACTIVITY_ENDED")]


# -- M10 -------------------------------------------------------------------------------------


def test_M10_the_wallet_size_comes_from_the_rules_file(rules: Rules) -> None:
    size = rules.campaigns.wallet_size
    open_pool = [PoolStanding("p1", 5, 3, 0)]
    assert c.claim_failures(rules, size - 1, open_pool) == []
    assert ids(c.claim_failures(rules, size, open_pool)) == [("M10", "WALLET_FULL")]
    small = dataclasses.replace(rules, campaigns=dataclasses.replace(rules.campaigns, wallet_size=2))
    assert ids(c.claim_failures(small, 2, open_pool)) == [("M10", "WALLET_FULL")]


def test_M10_the_per_user_limit_of_every_pool_and_M7_no_prizes_left(rules: Rules) -> None:
    at_limit = [PoolStanding("p1", 5, 2, 2), PoolStanding("p2", 5, 1, 1)]
    assert ids(c.claim_failures(rules, 0, at_limit)) == [("M10", "CLAIM_LIMIT_REACHED")]
    one_left = [PoolStanding("p1", 5, 2, 2), PoolStanding("p2", 1, 1, 0)]
    assert c.claim_failures(rules, 0, one_left) == [] and c.claimable(one_left) == ["p2"]
    empty = [PoolStanding("p1", 0, 2, 0)]
    assert ids(c.claim_failures(rules, 0, empty)) == [("M7", "NO_PRIZES_LEFT")]
    assert c.claimable(empty) == []


# -- M11 -------------------------------------------------------------------------------------


def test_M11_ten_activities_at_once_and_the_eleventh_is_refused(rules: Rules) -> None:
    existing = [window(0, 60)] * 9
    failures, at_once = c.activity_cap_failures(rules, existing, window(10, 20))
    assert failures == [] and at_once == 10
    failures, at_once = c.activity_cap_failures(rules, [*existing, window(15, 90)], window(10, 20))
    assert ids(failures) == [("M11", "TOO_MANY_ACTIVITIES")]
    assert failures[0].figures == {"activities": "10", "cap": "10"}


def test_M11_counts_activities_at_once_not_ever(rules: Rules) -> None:
    # Ten one-hour activities one after another never run together: an eleventh fits beside any of them.
    sequential = [window(60 * i, 60 * (i + 1)) for i in range(10)]
    failures, at_once = c.activity_cap_failures(rules, sequential, window(0, 600))
    assert failures == [] and at_once == 2
    # An activity ending at 10:00 and one starting at 10:00 do not overlap.
    assert c.busiest([window(0, 60)], window(60, 120)) == 0


def test_M11_windows_overlap_only_when_they_share_a_moment() -> None:
    first = window(0, 60)
    assert not first.overlaps(window(60, 120)) and not window(60, 120).overlaps(first)  # 10:00 end, 10:00 start
    assert first.overlaps(window(59, 120)) and window(59, 120).overlaps(first)
    assert first.overlaps(window(10, 20)) and window(10, 20).overlaps(first)  # one inside the other
    assert not first.overlaps(window(90, 120)) and not window(-30, 0).overlaps(first)


def test_M11_an_activity_that_ended_frees_exactly_its_own_slot() -> None:
    # 10:00–10:10 ends before 10:20–10:30 and 10:25–10:35 begin: at 10:25 two run, not one.
    assert c.busiest([window(0, 10), window(20, 30), window(25, 35)], window(0, 60)) == 2


def test_M11_an_end_and_a_start_at_one_moment_are_one_activity_in_whatever_order_they_are_listed() -> None:
    # 10:30–11:00 listed before 10:00–10:30: at 10:30 one ends as the other begins, never two at once.
    assert c.busiest([window(30, 60), window(0, 30)], window(0, 60)) == 1


@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(1, 30)), max_size=15),
    st.integers(0, 50),
    st.integers(1, 30),
)
def test_M11_busiest_is_the_most_windows_sharing_one_moment(
    spans: list[tuple[int, int]], start: int, length: int
) -> None:
    windows = [window(s, s + d) for s, d in spans]
    new = window(start, start + length)
    moments = [new.starts_at + timedelta(minutes=m) for m in range(length)] + [
        w.starts_at for w in windows if new.starts_at <= w.starts_at < new.ends_at
    ]
    expected = max((sum(1 for w in windows if w.starts_at <= t < w.ends_at) for t in moments), default=0)
    assert c.busiest(windows, new) == expected


# -- M12 -------------------------------------------------------------------------------------


def trumpet(rules: Rules, level: int = 3, on_sub_group: bool = True, display: timedelta = timedelta(minutes=1)):  # type: ignore[no-untyped-def]
    return c.trumpet_failures(
        rules,
        group_level=level,
        on_sub_group=on_sub_group,
        activity=window(0, 60),
        activity_ended_at=None,
        display_starts_at=T0 + display,
    )


@pytest.mark.parametrize("level", [3, 4])
def test_M12_levels_l3_and_l4_set_a_trumpet_one_minute_after_the_start(rules: Rules, level: int) -> None:
    assert trumpet(rules, level=level) == []


def test_M12_below_l3_before_ten_oh_one_and_on_the_group_set_are_all_refused(rules: Rules) -> None:
    assert ids(trumpet(rules, level=2)) == [("M12", "GROUP_LEVEL_TOO_LOW")]
    assert ids(trumpet(rules, display=timedelta(seconds=59))) == [("M12", "TRUMPET_TOO_EARLY")]
    assert ids(trumpet(rules, display=-timedelta(minutes=5))) == [("M12", "TRUMPET_TOO_EARLY")]
    assert ids(trumpet(rules, on_sub_group=False)) == [("M12", "TRUMPET_ON_SUB_GROUP")]
    everything = trumpet(rules, level=0, on_sub_group=False, display=timedelta(0))
    assert [f.reason for f in everything] == ["GROUP_LEVEL_TOO_LOW", "TRUMPET_ON_SUB_GROUP", "TRUMPET_TOO_EARLY"]
    assert ids(trumpet(rules, display=timedelta(minutes=60))) == [("M12", "TRUMPET_AFTER_ACTIVITY")]


def test_M12_an_activity_in_the_last_minute_of_9999_refuses_a_trumpet_and_names_no_impossible_time(
    rules: Rules,
) -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    late = c.Window(last - timedelta(seconds=30), last)
    for display in (late.starts_at, last - timedelta(seconds=1)):  # 30 s or 29 s after the start
        [early] = c.trumpet_failures(
            rules, group_level=3, on_sub_group=True, activity=late, activity_ended_at=None, display_starts_at=display
        )
        assert (early.reason, early.figures["earliest"]) == ("TRUMPET_TOO_EARLY", "after 9999-12-31T23:59:59")
    fits = c.Window(last - timedelta(seconds=61), last)  # 60 s after its start is still a time: shown as one
    [early] = c.trumpet_failures(
        rules, group_level=3, on_sub_group=True, activity=fits, activity_ended_at=None, display_starts_at=fits.starts_at
    )
    assert early.figures["earliest"] == "9999-12-31T23:59:58+00:00"
    edge = datetime.max.replace(tzinfo=UTC) - timedelta(seconds=60)  # + 60 s is the last moment a datetime holds
    [early] = c.trumpet_failures(
        rules,
        group_level=3,
        on_sub_group=True,
        activity=c.Window(edge, last),
        activity_ended_at=None,
        display_starts_at=edge,
    )
    assert early.figures["earliest"] == "9999-12-31T23:59:59.999999+00:00"
    exact = c.Window(last - timedelta(seconds=60), last + timedelta(microseconds=999_999))
    on_time = c.trumpet_failures(  # exactly 60 s after the start, at the last second: early no more
        rules, group_level=3, on_sub_group=True, activity=exact, activity_ended_at=None, display_starts_at=last
    )
    assert on_time == []


def test_M12_the_delay_and_the_level_come_from_the_rules_file(rules: Rules) -> None:
    relaxed = dataclasses.replace(
        rules, campaigns=dataclasses.replace(rules.campaigns, trumpet_min_level=2, trumpet_min_delay_seconds=0)
    )
    assert trumpet(relaxed, level=2, display=timedelta(0)) == []


# -- M13 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ActivityKind.STORE_RED_PACKET, ActivityKind.TASK_REWARD])
def test_M13_retired_tools_are_refused_with_that_reason(kind: ActivityKind) -> None:
    failures = c.retired_tool_failures(kind)
    assert ids(failures) == [("M13", "TOOL_RETIRED")] and "retired" in failures[0].message


@pytest.mark.parametrize(
    "kind", [k for k in ActivityKind if k not in (ActivityKind.STORE_RED_PACKET, ActivityKind.TASK_REWARD)]
)
def test_M13_voting_check_in_and_lucky_red_packets_are_live_tools(kind: ActivityKind) -> None:
    assert c.retired_tool_failures(kind) == []


def test_M13_check_in_days_are_market_days(rules: Rules) -> None:
    assert c.market_day(rules, datetime(2026, 3, 10, 15, 59, tzinfo=UTC)) == "2026-03-10"
    assert c.market_day(rules, datetime(2026, 3, 10, 16, 0, tzinfo=UTC)) == "2026-03-11"


# -- D2: the largest stock ----------------------------------------------------------------------


def test_D2_a_restock_up_to_the_largest_stock_passes_and_one_more_unit_is_refused_with_the_figures() -> None:
    assert c.stock_limit_failures(stock=90, quantity=10, most=100) == []
    [failure] = c.stock_limit_failures(stock=100, quantity=1, most=100)
    assert (failure.rule_id, failure.reason) == ("D2", "STOCK_LIMIT")
    assert failure.figures == {"stock": "100", "quantity": "1", "max": "100"}


@given(st.integers(0, 2**63 - 1), st.integers(1, 2**63 - 1), st.integers(1, 2**63 - 1))
def test_D2_the_stock_limit_is_decided_without_computing_past_64_bits(stock: int, quantity: int, most: int) -> None:
    """The check is ``quantity <= most - stock``, as the database's conditional update is: no sum overflows."""
    assert (c.stock_limit_failures(stock, quantity, most) == []) == (stock + quantity <= most)
