"""The groups rules alone: capacity (T1, T2, T4), placement and naming (T5), C13, R2, C9/C10."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.rules import Rules, load_rules
from services.groups import rules as g
from services.groups.rules import AccountFill, GroupKind, SetFill, SubGroupFill, ThresholdKind


def small(rules: Rules) -> Rules:
    """Small caps so every boundary is a few members away."""
    return dataclasses.replace(
        rules,
        store_groups=dataclasses.replace(
            rules.store_groups, sub_group_capacity=3, group_set_capacity=7, sub_groups_per_set=4
        ),
        live_groups=dataclasses.replace(
            rules.live_groups, sub_group_capacity=2, group_set_capacity=10, sub_groups_per_set=3
        ),
    )


def fill(kind: GroupKind, *counts: int) -> SetFill:
    return SetFill(kind, sum(counts), tuple(SubGroupFill(i + 1, c) for i, c in enumerate(counts)))


def account(kind: GroupKind = GroupKind.STORE, members: int = 0, sets: int = 0, level: int = 0) -> AccountFill:
    return AccountFill(kind, members, sets, level)


# -- T1, T4: the caps come from the rules file --------------------------------------------------


def test_t1_store_set_limits_are_500_5000_and_10_sub_groups(rules: Rules) -> None:
    limits = g.set_limits(rules, GroupKind.STORE)
    assert (limits.sub_group_capacity, limits.group_set_capacity, limits.sub_groups_per_set) == (500, 5000, 10)


def test_t4_live_set_limits_are_100_2000_and_20_sub_groups(rules: Rules) -> None:
    limits = g.set_limits(rules, GroupKind.LIVE)
    assert (limits.sub_group_capacity, limits.group_set_capacity, limits.sub_groups_per_set) == (100, 2000, 20)


def test_t4_streamer_may_have_25_sets_and_50000_members_at_any_level(rules: Rules) -> None:
    for level in range(5):
        limits = g.account_limits(rules, GroupKind.LIVE, level)
        assert (limits.group_sets, limits.members) == (25, 50_000)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_t2_levels_l0_to_l3_allow_5_sets_and_25000_members(rules: Rules, level: int) -> None:
    limits = g.account_limits(rules, GroupKind.STORE, level)
    assert (limits.group_sets, limits.members) == (5, 25_000)


def test_t2_level_l4_allows_10_sets_and_50000_members(rules: Rules) -> None:
    limits = g.account_limits(rules, GroupKind.STORE, 4)
    assert (limits.group_sets, limits.members) == (10, 50_000)


def test_caps_follow_the_rules_file_not_literals(rules: Rules) -> None:
    changed = dataclasses.replace(
        rules, store_groups=dataclasses.replace(rules.store_groups, group_sets_by_level=(1, 2, 3, 4, 6))
    )
    assert [g.account_limits(changed, GroupKind.STORE, lv).group_sets for lv in range(5)] == [1, 2, 3, 4, 6]


# -- T2, T4: creating group-sets --------------------------------------------------------------


@pytest.mark.parametrize(("level", "allowed"), [(0, 5), (3, 5), (4, 10)])
def test_t2_store_group_set_cap_by_level(rules: Rules, level: int, allowed: int) -> None:
    assert g.create_failures(rules, account(sets=allowed - 1, level=level)) == []
    [failure] = g.create_failures(rules, account(sets=allowed, level=level))
    assert failure.rule_id == "T2"
    assert failure.figures == {"group_sets": str(allowed), "cap": str(allowed), "level": str(level)}


def test_t4_streamer_group_set_cap(rules: Rules) -> None:
    assert g.create_failures(rules, account(GroupKind.LIVE, sets=24)) == []
    [failure] = g.create_failures(rules, account(GroupKind.LIVE, sets=25))
    assert (failure.rule_id, failure.figures["cap"]) == ("T4", "25")


# -- T5: placement and names -------------------------------------------------------------------


def test_t5_sub_group_is_named_after_its_set_plus_sequence() -> None:
    assert g.sub_group_name("主播铁粉群", 1) == "主播铁粉群1"
    assert g.sub_group_name("主播铁粉群", 2) == "主播铁粉群2"


def test_t5_join_goes_to_the_first_sub_group_with_room(rules: Rules) -> None:
    r = small(rules)
    assert g.place(r, fill(GroupKind.STORE, 2)) == g.Placement(1, new_sub_group=False)
    # A leave freed room in sub-group 1: the next join fills it before sub-group 3.
    assert g.place(r, fill(GroupKind.STORE, 2, 3, 1)) == g.Placement(1, new_sub_group=False)
    assert g.place(r, fill(GroupKind.STORE, 3, 3, 1)) == g.Placement(3, new_sub_group=False)


def test_t5_next_sub_group_is_created_only_when_all_are_full(rules: Rules) -> None:
    r = small(rules)
    assert g.place(r, fill(GroupKind.STORE, 3)) == g.Placement(2, new_sub_group=True)
    assert g.place(r, fill(GroupKind.STORE, 3, 3)) == g.Placement(3, new_sub_group=True)


def test_t1_no_sub_group_beyond_the_per_set_limit(rules: Rules) -> None:
    r = small(rules)  # 4 sub-groups of 3 = 12 > set cap 7, so use live: 3 of 2 = 6 < 10
    assert g.place(r, fill(GroupKind.LIVE, 2, 2, 2)) is None
    failures = g.capacity_failures(r, fill(GroupKind.LIVE, 2, 2, 2), account(GroupKind.LIVE, members=6))
    assert [(f.rule_id, f.reason) for f in failures] == [("T4", "SUB_GROUPS_FULL")]


# -- T1, T2, T4: joining ------------------------------------------------------------------------


def test_t1_join_refused_when_the_set_is_full(rules: Rules) -> None:
    r = small(rules)
    assert g.capacity_failures(r, fill(GroupKind.STORE, 3, 3), account(members=6)) == []
    failures = g.capacity_failures(r, fill(GroupKind.STORE, 3, 3, 1), account(members=7))
    assert [(f.rule_id, f.reason) for f in failures] == [("T1", "GROUP_SET_FULL")]
    assert failures[0].figures == {"members": "7", "cap": "7"}


def test_t1_default_caps_set_full_at_5000(rules: Rules) -> None:
    full = fill(GroupKind.STORE, *([500] * 10))
    reasons = {f.reason for f in g.capacity_failures(rules, full, account(members=5000))}
    assert reasons == {"GROUP_SET_FULL", "SUB_GROUPS_FULL"}
    assert g.capacity_failures(rules, fill(GroupKind.STORE, *([500] * 9), 499), account(members=4999)) == []


@pytest.mark.parametrize(("level", "cap"), [(0, 25_000), (3, 25_000), (4, 50_000)])
def test_t2_store_member_cap_by_level(rules: Rules, level: int, cap: int) -> None:
    assert g.capacity_failures(rules, fill(GroupKind.STORE, 0), account(members=cap - 1, level=level)) == []
    [failure] = g.capacity_failures(rules, fill(GroupKind.STORE, 0), account(members=cap, level=level))
    assert (failure.rule_id, failure.reason) == ("T2", "ACCOUNT_FULL")
    assert failure.figures == {"members": str(cap), "cap": str(cap), "level": str(level)}


def test_t4_live_set_and_streamer_caps(rules: Rules) -> None:
    full_set = fill(GroupKind.LIVE, *([100] * 20))
    failures = g.capacity_failures(rules, full_set, account(GroupKind.LIVE, members=50_000))
    assert {(f.rule_id, f.reason) for f in failures} == {
        ("T4", "GROUP_SET_FULL"),
        ("T4", "SUB_GROUPS_FULL"),
        ("T4", "ACCOUNT_FULL"),
    }
    assert g.capacity_failures(rules, fill(GroupKind.LIVE, 99), account(GroupKind.LIVE, members=49_999)) == []


def test_every_full_cap_is_listed_at_once(rules: Rules) -> None:
    r = small(rules)
    failures = g.capacity_failures(r, fill(GroupKind.STORE, 3, 3, 3, 3), account(members=25_000))
    assert {f.reason for f in failures} == {"GROUP_SET_FULL", "SUB_GROUPS_FULL", "ACCOUNT_FULL"}


# -- C13 ----------------------------------------------------------------------------------------


def test_c13_a_member_cannot_join_the_same_set_again(rules: Rules) -> None:
    assert g.join_failures(rules, fill(GroupKind.STORE, 1), account(), already_member=False) == []
    [failure] = g.join_failures(rules, fill(GroupKind.STORE, 1), account(), already_member=True)
    assert (failure.rule_id, failure.reason) == ("C13", "ALREADY_MEMBER")


# -- R2 -----------------------------------------------------------------------------------------


def test_r2_at_most_9_super_admins(rules: Rules) -> None:
    assert g.admin_limit_failures(rules, 8) == []
    [failure] = g.admin_limit_failures(rules, 9)
    assert (failure.rule_id, failure.figures["cap"]) == ("R2", "9")
    assert g.admin_limit_failures(rules, 0, 9) == []
    assert g.admin_limit_failures(rules, 0, 10)[0].rule_id == "R2"


# -- R3 -----------------------------------------------------------------------------------------


def test_r3_settings_on_a_sub_group_are_refused() -> None:
    assert g.settings_target_failures(None) == []
    [failure] = g.settings_target_failures("gs_1")
    assert (failure.rule_id, failure.figures) == ("R3", {"group_set_id": "gs_1"})


# -- C9, C10: threshold kind matches group kind ------------------------------------------------


@pytest.mark.parametrize(
    "threshold", [ThresholdKind.FOLLOW, ThresholdKind.SPEND, ThresholdKind.PASSWORD, ThresholdKind.CROWD]
)
def test_c9_store_thresholds(threshold: ThresholdKind) -> None:
    assert g.threshold_kind_failures(GroupKind.STORE, threshold) == []
    assert g.threshold_kind_failures(GroupKind.LIVE, threshold)[0].rule_id == "C10"


def test_c10_live_groups_take_only_a_fan_level() -> None:
    assert g.threshold_kind_failures(GroupKind.LIVE, ThresholdKind.FAN_LEVEL) == []
    assert g.threshold_kind_failures(GroupKind.STORE, ThresholdKind.FAN_LEVEL)[0].rule_id == "C9"


def test_owner_key_is_the_store_or_the_streamer() -> None:
    assert g.owner_key(GroupKind.STORE, "s1", "") == "s1"
    assert g.owner_key(GroupKind.LIVE, "s1", "h1") == "streamer/h1"
    # A store may be called what a streamer's key would be if it used an id's characters; it cannot.
    assert g.owner_key(GroupKind.STORE, "streamer:h1", "") != g.owner_key(GroupKind.LIVE, "", "h1")


# -- T5, T6 as a model: any sequence of joins and leaves keeps every cap -----------------------


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=150))
def test_t5_t6_joins_and_leaves_never_break_a_cap(ops: list[tuple[bool, int]]) -> None:
    r = small(load_rules(env={}))
    limits = g.set_limits(r, GroupKind.STORE)
    subs: dict[int, set[int]] = {1: set()}  # the first sub-group comes with the set (T5)
    where: dict[int, int] = {}
    for is_join, consumer in ops:
        if not is_join:
            if consumer in where:
                subs[where.pop(consumer)].discard(consumer)
            continue
        fill = SetFill(GroupKind.STORE, len(where), tuple(SubGroupFill(s, len(m)) for s, m in sorted(subs.items())))
        failures = g.join_failures(r, fill, account(members=len(where)), already_member=consumer in where)
        placement = g.place(r, fill)
        if failures:
            assert consumer in where or len(where) >= limits.group_set_capacity or placement is None
            continue
        assert placement is not None
        if placement.new_sub_group:
            assert all(len(m) >= limits.sub_group_capacity for m in subs.values())
            assert placement.seq == len(subs) + 1
            subs[placement.seq] = set()
        else:
            open_seqs = [s for s, m in sorted(subs.items()) if len(m) < limits.sub_group_capacity]
            assert placement.seq == open_seqs[0]
        subs[placement.seq].add(consumer)
        where[consumer] = placement.seq
        assert len(where) <= limits.group_set_capacity
        assert len(subs) <= limits.sub_groups_per_set
        assert all(len(m) <= limits.sub_group_capacity for m in subs.values())


# -- R5 ------------------------------------------------------------------------------------------


def test_R5_owner_removes_anyone_but_themselves_admins_only_plain_members() -> None:
    from services.groups.rules import RemovalCause, removal_refusal

    owner, admin = RemovalCause.OWNER, RemovalCause.ADMIN
    assert removal_refusal(owner, target_is_owner=False, target_is_admin=False) is None
    assert removal_refusal(owner, target_is_owner=False, target_is_admin=True) is None  # the owner removes an admin
    assert removal_refusal(admin, target_is_owner=False, target_is_admin=False) is None
    assert "R5" in (removal_refusal(admin, target_is_owner=False, target_is_admin=True) or "")
    assert "R1" in (removal_refusal(admin, target_is_owner=True, target_is_admin=False) or "")
    assert "R1" in (removal_refusal(owner, target_is_owner=True, target_is_admin=False) or "")
    # A store's blacklist and the sleeping plan are not a person's decision: not limited by R5.
    for cause in (RemovalCause.STORE_BLACKLIST, RemovalCause.SLEEPING):
        assert removal_refusal(cause, target_is_owner=True, target_is_admin=True) is None


def test_R5_X4_a_removal_reads_as_cause_bar_and_reason() -> None:
    from services.groups.rules import RemovalCause, describe_removal

    assert describe_removal(RemovalCause.OWNER, "发广告", False) == "owner: 发广告"
    assert describe_removal(RemovalCause.ADMIN, "", True) == "admin, barred from the store (C5)"


# -- Pinned by mutation testing (make mutation): each fails on a mutant that once survived -------


def test_T2_texts_name_the_store_its_figures_and_its_level(rules: Rules) -> None:
    """The refusals a merchant reads (T2): group-sets and members, with the cap and the group level."""
    [sets] = g.create_failures(rules, account(sets=5, level=3))
    assert (sets.reason, sets.message) == ("GROUP_SET_LIMIT_REACHED", "5 group-sets, at most 5 at group level L3")
    [members] = g.capacity_failures(rules, fill(GroupKind.STORE, 0), account(members=50_000, level=4))
    assert (members.rule_id, members.reason) == ("T2", "ACCOUNT_FULL")
    assert members.message == "the store's group-sets hold 50000 members, at most 50000 at group level L4"
    assert members.figures == {"members": "50000", "cap": "50000", "level": "4"}


def test_T4_texts_name_the_streamer_and_its_figures_without_a_level(rules: Rules) -> None:
    """The refusals a streamer reads (T4): no group level (a streamer has none), the streamer's caps."""
    [sets] = g.create_failures(rules, account(GroupKind.LIVE, sets=25, level=4))
    assert (sets.rule_id, sets.message, sets.figures) == (
        "T4",
        "25 group-sets, at most 25",
        {"group_sets": "25", "cap": "25"},
    )
    full = fill(GroupKind.LIVE, *([100] * 20))
    failures = g.capacity_failures(rules, full, account(GroupKind.LIVE, members=50_000, level=4))
    assert [(f.rule_id, f.reason, f.message, dict(f.figures)) for f in failures] == [
        ("T4", "GROUP_SET_FULL", "the group-set holds 2000 members, at most 2000", {"members": "2000", "cap": "2000"}),
        (
            "T4",
            "SUB_GROUPS_FULL",
            "all 20 sub-groups hold 100 members and a group-set has at most 20 sub-groups",
            {"sub_groups": "20", "max_sub_groups": "20", "sub_group_cap": "100"},
        ),
        (
            "T4",
            "ACCOUNT_FULL",
            "the streamer's group-sets hold 50000 members, at most 50000",
            {"members": "50000", "cap": "50000"},
        ),
    ]


def test_T1_set_full_text_names_the_members_and_the_cap(rules: Rules) -> None:
    full = fill(GroupKind.STORE, *([500] * 10))
    [set_full, subs_full] = g.capacity_failures(rules, full, account(members=5000))
    assert (set_full.rule_id, set_full.message) == ("T1", "the group-set holds 5000 members, at most 5000")
    assert subs_full.message == "all 10 sub-groups hold 500 members and a group-set has at most 10 sub-groups"


def test_T2_E5_a_store_whose_level_is_not_given_is_at_L0(rules: Rules) -> None:
    """A store with no group level yet (E5: L0 may create) has L0's caps, not another level's."""
    unlevelled = AccountFill(GroupKind.STORE, member_count=0, group_set_count=5)
    assert unlevelled.level == 0 and unlevelled.extra_members == 0
    [failure] = g.create_failures(rules, unlevelled)
    assert failure.figures["level"] == "0" and failure.message.endswith("at group level L0")


def test_T3_every_granted_member_counts_however_small_the_grant(rules: Rules) -> None:
    """Expansion grants are the rules file's size (and a grant at the T3 cap is cut short): one member counts."""
    assert g.store_member_capacity(rules, 0, 1) == 25_001
    assert g.account_limits(rules, GroupKind.STORE, 0, extra_members=1).members == 25_001
    assert g.store_member_capacity(rules, 0, 0) == g.store_member_capacity(rules, 0, -1) == 25_000


def test_T5_the_first_sub_group_of_an_empty_set_is_number_1() -> None:
    """T5: "主播铁粉群" → "主播铁粉群1": a set with no sub-group yet gets sub-group 1, not 0 or 2."""
    r = small(load_rules(env={}))
    assert g.place(r, SetFill(GroupKind.LIVE, 0, ())) == g.Placement(1, new_sub_group=True)


def test_C9_C10_a_threshold_carries_only_its_own_figure_and_reads_back_as_set() -> None:
    """A follow or password threshold asks no spend (0), names no crowd and no fan level; read back from its
    database row, every kind equals the threshold the request made."""
    from services.groups.records import threshold_from_row, threshold_params

    assert g.Threshold(ThresholdKind.FOLLOW) == g.Threshold(ThresholdKind.FOLLOW, 0, "", None)
    for threshold in (
        g.Threshold(ThresholdKind.FOLLOW),
        g.Threshold(ThresholdKind.PASSWORD),
        g.Threshold(ThresholdKind.SPEND, min_spend_fen=50_000),
        g.Threshold(ThresholdKind.CROWD, crowd_id="vip"),
        g.Threshold(ThresholdKind.FAN_LEVEL, min_fan_level=g.FanLevel.DIAMOND),
    ):
        assert threshold_from_row(str(threshold.kind), threshold_params(threshold)) == threshold
