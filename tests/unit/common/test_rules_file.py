"""The rules file: every SPEC number in one place, overridable by ops, strict about typos."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.rules import RulesError, load_rules


def test_defaults_carry_the_spec_numbers() -> None:
    rules = load_rules(env={})
    assert rules.create.min_paid_orders == 30  # E2
    assert rules.create.content_level_delay_days == 2  # E3
    assert rules.join.min_taoqi_score == 401  # C2
    assert rules.store_groups.sub_group_capacity == 500  # T1
    assert rules.store_groups.group_set_capacity == 5000  # T1
    assert rules.store_groups.group_sets_allowed(3) == 5 and rules.store_groups.group_sets_allowed(4) == 10  # T2
    assert rules.store_groups.members_allowed(0) == 25_000 and rules.store_groups.members_allowed(4) == 50_000
    assert (rules.live_groups.sub_group_capacity, rules.live_groups.group_set_capacity) == (100, 2000)  # T4
    assert rules.roles.max_super_admins == 9  # R2
    assert rules.campaigns.max_cash_red_packets_per_order == 10  # M8
    assert rules.campaigns.max_store_coupons_per_order == 1  # M8
    assert rules.campaigns.max_active_activities == 10  # M11
    assert rules.campaigns.trumpet_min_level == 3  # M12: L3 or L4
    assert rules.campaigns.trumpet_min_delay_seconds == 60  # M12: 10:00 → 10:01
    assert rules.campaigns.wallet_size > 0  # M10 (config)


def test_an_override_file_changes_only_what_it_names(tmp_path: Path) -> None:
    override = tmp_path / "rules.toml"
    override.write_text("[join]\nmin_taoqi_score = 400\n")
    rules = load_rules(env={"QUN_RULES_FILE": str(override)})
    assert rules.join.min_taoqi_score == 400
    assert rules.create.min_paid_orders == 30


@pytest.mark.parametrize(
    "text",
    [
        "[join]\nmin_taoqi_scor = 400\n",  # typo
        "[join]\nmin_taoqi_score = '400'\n",  # wrong type
        "[join]\nmin_taoqi_score = true\n",
        "[store_groups]\ngroup_sets_by_level = [5, 5]\n",  # one value per level
        "[roles]\nmax_super_admins = -1\n",
        "not toml at all [",
    ],
)
def test_a_bad_rules_file_stops_the_process(tmp_path: Path, text: str) -> None:
    override = tmp_path / "rules.toml"
    override.write_text(text)
    with pytest.raises(RulesError):
        load_rules(env={"QUN_RULES_FILE": str(override)})


def test_D1_one_calendar_for_every_rule() -> None:
    rules = load_rules(env={})
    assert rules.calendar.utc_offset_hours == 8
    assert rules.calendar.market.show(rules.calendar.market.year_start(2027)) == "2027-01-01 00:00 UTC+8"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[bounds]\nmoney_fen = 10_000_000_000_000\n", "an order's subtotal"),  # × 10^6 units > 2^63 − 1
        ("[bounds]\npool_prizes = 10_000_000_000_000\n", "a pool's value"),
        ("[bounds]\nquantity = 0\n", "bounds.quantity must be at least 1"),
        ("[calendar]\nutc_offset_hours = 15\n", "between -12 and 14"),
    ],
)
def test_D2_bounds_whose_totals_overflow_64_bits_stop_the_process(tmp_path: Path, text: str, says: str) -> None:
    override = tmp_path / "rules.toml"
    override.write_text(text)
    with pytest.raises(RulesError, match=says):
        load_rules(env={"QUN_RULES_FILE": str(override)})


def test_D2_the_default_bounds_keep_every_guarded_total_in_64_bits() -> None:
    from services.common.rules import OVERFLOW_GUARDS
    from services.common.validation import MAX_INT64

    bounds = load_rules(env={}).bounds
    assert bounds.money_fen == 10**12  # as the order facts have always been capped
    assert all(total(bounds) <= MAX_INT64 for _, total in OVERFLOW_GUARDS)
