"""Groups over time as plain functions: T3, T7, T8, C15/X5."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from services.common.rules import Rules
from services.groups import lifecycle
from services.groups.lifecycle import ExpansionFacts, MonthFigures, SleepingAction
from services.groups.rules import AccountFill, GroupKind, account_limits, capacity_failures, create_failures


def test_T7_monthly_average_is_the_sum_of_days_over_days_in_the_month() -> None:
    counts = {"2026-02-01": 280, "2026-02-15": 280}  # February 2026 has 28 days; missing days count 0
    assert lifecycle.monthly_average(counts, "2026-02") == 20.0
    assert lifecycle.monthly_average({f"2026-01-{d:02d}": 31 for d in range(1, 32)}, "2026-01") == 31.0


def test_T8_level_is_the_highest_whose_every_bar_is_met(rules: Rules) -> None:
    bars = rules.group_levels
    at_l3 = MonthFigures(
        avg_members=bars.min_avg_members[3],
        open_rate_bp=bars.min_open_rate_bp[3],
        revisit_7d_bp=bars.min_revisit_7d_bp[4],  # above L4's bar, but the rest hold it at L3
        conversion_bp=bars.min_conversion_bp[3],
        merchant_messages=bars.min_merchant_messages[3],
    )
    assert lifecycle.level_for(rules, at_l3) == 3
    one_short = dataclasses.replace(at_l3, merchant_messages=bars.min_merchant_messages[3] - 1)
    assert lifecycle.level_for(rules, one_short) == 2
    assert lifecycle.level_for(rules, MonthFigures(0, 0, 0, 0, 0)) == 0


def expansion(rules: Rules, **overrides: object) -> list[str]:
    facts = ExpansionFacts(
        month="2026-05",
        levels_by_month={"2026-03": 4, "2026-04": 4},
        level_now=4,
        members=42_500,
        extra_members=0,
    )
    return [f.reason for f in lifecycle.expansion_failures(rules, dataclasses.replace(facts, **overrides))]


def test_T3_expansion_granted_at_L3_for_two_months_and_85_percent(rules: Rules) -> None:
    assert expansion(rules) == []  # 42,500 ÷ (10 × 5,000) = 85%


def test_T3_spec_example_70_percent_is_refused(rules: Rules) -> None:
    assert expansion(rules, members=35_000) == ["UTILISATION_TOO_LOW"]


def test_T3_needs_L3_in_each_of_the_last_two_months(rules: Rules) -> None:
    assert expansion(rules, levels_by_month={"2026-03": 2, "2026-04": 4}) == ["LEVEL_TOO_LOW_FOR_EXPANSION"]
    assert expansion(rules, levels_by_month={"2026-04": 4}) == ["LEVEL_TOO_LOW_FOR_EXPANSION"]


def test_T3_never_beyond_500000(rules: Rules) -> None:
    # L4 allows 50,000; nine grants make 500,000; nothing is left for a tenth.
    assert expansion(rules, extra_members=400_000) == []
    assert expansion(rules, extra_members=450_000) == ["EXPANSION_LIMIT_REACHED"]


def test_T3_the_last_application_is_granted_up_to_the_cap(rules: Rules) -> None:
    # L3 allows 25,000; nine grants of 50,000 make 475,000: the tenth adds the 25,000 left, then nothing.
    assert lifecycle.expansion_grant(rules, 3, extra_members=9 * 50_000) == 25_000
    assert expansion(rules, level_now=3, members=21_250, extra_members=9 * 50_000) == []
    assert lifecycle.capacity(rules, 3, 9 * 50_000 + 25_000) == 500_000
    assert lifecycle.expansion_grant(rules, 3, extra_members=9 * 50_000 + 25_000) == 0
    assert expansion(rules, level_now=3, members=21_250, extra_members=475_000) == ["EXPANSION_LIMIT_REACHED"]
    assert lifecycle.expansion_grant(rules, 4, extra_members=0) == 50_000


def test_T3_expansions_never_lift_a_store_past_the_cap_when_its_level_rises(rules: Rules) -> None:
    # Granted up to 500,000 at L3 (extra 475,000), then L4 (50,000 of its own): still 500,000, not 525,000.
    assert account_limits(rules, GroupKind.STORE, 4, extra_members=475_000).members == 500_000
    assert account_limits(rules, GroupKind.STORE, 4, extra_members=0).members == 50_000


def test_T3_the_refusal_reads_true_84_99_percent_is_below_85_00(rules: Rules) -> None:
    facts = ExpansionFacts(
        month="2026-05", levels_by_month={"2026-03": 4, "2026-04": 4}, level_now=4, members=42_495, extra_members=0
    )
    [failure] = lifecycle.expansion_failures(rules, facts)
    assert failure.reason == "UTILISATION_TOO_LOW"
    assert failure.message == "utilisation 42495 ÷ (10 × 5000) = 84.99% < 85.00%"
    assert failure.figures["utilisation_bp"] == "8499"


def test_D3_corrupt_figures_fail_the_store_they_belong_to(rules: Rules) -> None:
    fine = MonthFigures(1.5, 100, 0, 10_000, 3)
    assert lifecycle.checked_figures(rules, fine) == fine
    with pytest.raises(lifecycle.CorruptFigures, match="open_rate_bp -7, merchant_messages 2147483647"):
        lifecycle.checked_figures(rules, dataclasses.replace(fine, open_rate_bp=-7, merchant_messages=2**31 - 1))
    with pytest.raises(lifecycle.CorruptFigures, match="negative member count"):
        lifecycle.checked_count("s1", -1)
    assert lifecycle.checked_count("s1", 0) == 0


def test_T3_a_grant_raises_the_member_and_group_set_caps(rules: Rules) -> None:
    limits = account_limits(rules, GroupKind.STORE, 4, extra_members=50_000)
    assert (limits.members, limits.group_sets) == (100_000, 20)
    full = AccountFill(GroupKind.STORE, member_count=50_000, group_set_count=10, level=4)
    assert [f.rule_id for f in create_failures(rules, full)] == ["T2"]
    granted = dataclasses.replace(full, extra_members=50_000)
    assert create_failures(rules, granted) == []


@pytest.mark.parametrize(
    ("inactive_days", "notified_days_ago", "expected"),
    [
        (89, None, SleepingAction.KEEP),
        (90, None, SleepingAction.NOTIFY),  # C15: past the window → notice first (X5)
        (100, 6, SleepingAction.KEEP),  # under notice, not yet removed
        (100, 7, SleepingAction.REMOVE),  # notice period over, still inactive
    ],
)
def test_C15_X5_notice_then_removal(
    rules: Rules, inactive_days: int, notified_days_ago: int | None, expected: SleepingAction
) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    action = lifecycle.sleeping_action(
        rules,
        last_active_at=now - timedelta(days=inactive_days),
        notified_at=None if notified_days_ago is None else now - timedelta(days=notified_days_ago),
        inactivity_days=rules.sleeping.default_inactivity_days,
        now=now,
    )
    assert action is expected


def test_months_shift_across_years() -> None:
    assert lifecycle.shift_month("2026-01", -1) == "2025-12"
    assert lifecycle.recent_months("2026-02", 2) == ["2025-12", "2026-01"]


def test_capacity_failures_use_granted_members(rules: Rules) -> None:
    from services.groups.rules import SetFill, SubGroupFill

    fill = SetFill(GroupKind.STORE, 10, (SubGroupFill(1, 10),))
    account = AccountFill(GroupKind.STORE, member_count=25_000, group_set_count=5, level=0)
    assert [f.reason for f in capacity_failures(rules, fill, account)] == ["ACCOUNT_FULL"]
    assert capacity_failures(rules, fill, dataclasses.replace(account, extra_members=50_000)) == []
