"""The E and C rules as plain functions: each test fails if its rule is broken."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from services.common import passwords
from services.common.clock import ManualClock
from services.common.errors import Failure, rule_ids
from services.common.rules import Rules
from services.eligibility import rules as r
from services.eligibility.domain import (
    Account,
    ContentLevel,
    CreateFacts,
    CrowdThreshold,
    FanLevel,
    FanLevelThreshold,
    FollowThreshold,
    GroupKind,
    JoinFacts,
    JoinQuery,
    ListingSource,
    PasswordThreshold,
    Platform,
    PlatformListing,
    Role,
    SpendThreshold,
    Store,
)

NOW = datetime(2026, 8, 24, 12, 0, tzinfo=UTC)

MAIN = Account("main-1", Role.STORE_MAIN, store_id="store-1")
SUB = Account("sub-1", Role.STORE_SUB, store_id="store-1")
STORE = Store("store-1", Platform.TMALL, "main-1", operating_normally=True)
STREAMER = Account("streamer-1", Role.STREAMER, broadcast_permitted=True)
STORE_STREAMER = Account("streamer-2", Role.STREAMER, store_id="store-1", broadcast_permitted=True)
CONSUMER = Account("consumer-1", Role.CONSUMER)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


def level(value: int, updated_at: datetime) -> ContentLevel:
    return ContentLevel("store-1", value, updated_at)


def good_store_facts(rules: Rules, **changes: object) -> CreateFacts:
    """A main account whose store meets every E2 condition."""
    facts = CreateFacts(
        account=MAIN,
        store=STORE,
        paid_orders=rules.create.min_paid_orders,
        content_levels=(level(rules.create.min_content_level, NOW - timedelta(days=10)),),
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def store_check(facts: CreateFacts, rules: Rules, now: datetime = NOW) -> r.CreateDecision:
    return r.check_create(GroupKind.STORE, facts, now, rules.create, rules.calendar.market)


def by_rule(failures: tuple[Failure, ...] | list[Failure], rule_id: str) -> Failure:
    [failure] = [f for f in failures if f.rule_id == rule_id]
    return failure


# --- E1 ---------------------------------------------------------------------------


def test_E1_main_account_named_by_its_store_may_create(rules: Rules) -> None:
    decision = store_check(good_store_facts(rules), rules)
    assert decision.allowed
    assert (decision.owner_account_id, decision.store_id) == ("main-1", "store-1")


def test_E1_refuses_a_sub_account_and_names_the_owner(rules: Rules) -> None:
    decision = store_check(good_store_facts(rules, account=SUB), rules)
    assert rule_ids(decision.failures) == ["E1"]
    assert decision.failures[0].reason == "NOT_STORE_MAIN_ACCOUNT"
    assert decision.owner_account_id == "main-1"


def test_E1_refuses_a_main_role_the_store_fact_does_not_name(rules: Rules) -> None:
    impostor = Account("main-2", Role.STORE_MAIN, store_id="store-1")
    decision = store_check(good_store_facts(rules, account=impostor), rules)
    assert rule_ids(decision.failures) == ["E1"]
    assert decision.failures[0].figures["main_account_id"] == "main-1"


def test_E1_needs_the_main_role_as_well_as_the_store_fact(rules: Rules) -> None:
    named_sub = dataclasses.replace(STORE, main_account_id="sub-1")
    decision = store_check(good_store_facts(rules, account=SUB, store=named_sub), rules)
    assert rule_ids(decision.failures) == ["E1"]


def test_E1_refuses_a_consumer_without_store_checks(rules: Rules) -> None:
    decision = store_check(CreateFacts(account=CONSUMER), rules)
    assert rule_ids(decision.failures) == ["E1"]


# --- E2 ---------------------------------------------------------------------------


def test_E2_refuses_29_orders_in_30_days(rules: Rules) -> None:
    decision = store_check(good_store_facts(rules, paid_orders=29), rules)
    failure = by_rule(decision.failures, "E2")
    assert failure.reason == "NOT_ENOUGH_PAID_ORDERS"
    assert failure.message == "orders_30d 29 < 30"
    assert failure.figures["paid_orders"] == "29"
    assert failure.figures["required"] == "30"


def test_E2_admits_30_orders_in_30_days(rules: Rules) -> None:
    assert store_check(good_store_facts(rules, paid_orders=30), rules).allowed


def test_E2_order_numbers_come_from_the_rules(rules: Rules) -> None:
    lenient = dataclasses.replace(rules, create=dataclasses.replace(rules.create, min_paid_orders=5))
    assert store_check(good_store_facts(rules, paid_orders=5), lenient).allowed
    assert not store_check(good_store_facts(rules, paid_orders=4), lenient).allowed


def test_E2_order_window_is_the_last_30_days(rules: Rules, clock: ManualClock) -> None:
    assert r.paid_orders_window_start(clock.now(), rules.create) == NOW - timedelta(days=30)


def test_E2_refuses_a_store_not_operating_normally(rules: Rules) -> None:
    closed = dataclasses.replace(STORE, operating_normally=False)
    decision = store_check(good_store_facts(rules, store=closed), rules)
    assert [(f.rule_id, f.reason) for f in decision.failures] == [("E2", "STORE_NOT_OPERATING")]


def test_E2_refuses_a_store_with_no_reported_status(rules: Rules) -> None:
    decision = store_check(good_store_facts(rules, store=None), rules)
    assert ("E2", "STORE_NOT_OPERATING") in [(f.rule_id, f.reason) for f in decision.failures]


def test_E2_refuses_content_level_L0(rules: Rules) -> None:
    decision = store_check(good_store_facts(rules, content_levels=(level(0, NOW - timedelta(days=10)),)), rules)
    failure = by_rule(decision.failures, "E2")
    assert failure.reason == "CONTENT_LEVEL_TOO_LOW"
    assert failure.figures == {"content_level": "0", "required": "1"}


def test_E2_no_reported_content_level_counts_as_L0(rules: Rules) -> None:
    decision = store_check(good_store_facts(rules, content_levels=()), rules)
    assert by_rule(decision.failures, "E2").figures["content_level"] == "0"


# --- E3 ---------------------------------------------------------------------------


def test_E3_level_visible_from_the_start_of_the_marketplace_day_T_plus_2(rules: Rules, clock: ManualClock) -> None:
    updated = datetime(2026, 8, 22, 9, 30, tzinfo=UTC)  # 17:30 on Aug 22 in China (D1)
    facts = good_store_facts(rules, content_levels=(level(1, updated),))
    aug_24_china = datetime(2026, 8, 23, 16, 0, tzinfo=UTC)
    clock.set(aug_24_china - timedelta(microseconds=1))
    before = store_check(facts, rules, clock.now())
    assert [(f.rule_id, f.reason) for f in before.failures] == [("E2", "CONTENT_LEVEL_NOT_YET_VISIBLE")]
    assert before.failures[0].figures["visible_from"] == "2026-08-23T16:00:00+00:00"
    assert "counts from 2026-08-24 00:00 UTC+8" in before.failures[0].message
    clock.set(aug_24_china)
    assert store_check(facts, rules, clock.now()).allowed


def test_E3_updated_late_on_aug_22_in_china_counts_from_aug_24_there(rules: Rules) -> None:
    updated = datetime(2026, 8, 22, 15, 30, tzinfo=UTC)  # 23:30 on Aug 22 in China
    facts = good_store_facts(rules, content_levels=(level(1, updated),))
    assert not store_check(facts, rules, datetime(2026, 8, 23, 15, 59, tzinfo=UTC)).allowed  # Aug 23 23:59 there
    assert store_check(facts, rules, datetime(2026, 8, 23, 16, 0, tzinfo=UTC)).allowed  # Aug 24 00:00 there
    early = good_store_facts(rules, content_levels=(level(1, datetime(2026, 8, 22, 16, 30, tzinfo=UTC)),))
    assert not store_check(early, rules, datetime(2026, 8, 24, 15, 59, tzinfo=UTC)).allowed  # made on Aug 23 there


def test_E3_previous_visible_level_counts_until_the_update_is_visible(rules: Rules) -> None:
    old, new = NOW - timedelta(days=7), NOW - timedelta(days=1)
    downgraded = good_store_facts(rules, content_levels=(level(2, old), level(0, new)))
    assert store_check(downgraded, rules).allowed  # L2 still counts; the L0 is not visible yet
    assert not store_check(downgraded, rules, new + timedelta(days=2)).allowed
    upgraded = good_store_facts(rules, content_levels=(level(0, old), level(1, new)))
    failure = by_rule(store_check(upgraded, rules).failures, "E2")
    assert failure.reason == "CONTENT_LEVEL_NOT_YET_VISIBLE"
    assert failure.figures["content_level"] == "0"
    assert failure.figures["pending_level"] == "1"


def test_E3_delay_comes_from_the_rules(rules: Rules) -> None:
    no_delay = dataclasses.replace(rules, create=dataclasses.replace(rules.create, content_level_delay_days=0))
    facts = good_store_facts(rules, content_levels=(level(1, NOW),))
    assert store_check(facts, no_delay).allowed
    assert not store_check(facts, rules).allowed


# --- E4 ---------------------------------------------------------------------------


def live_check(account: Account, rules: Rules, store: Store | None = None) -> r.CreateDecision:
    return r.check_create(
        GroupKind.LIVE, CreateFacts(account=account, store=store), NOW, rules.create, rules.calendar.market
    )


def test_E4_streamer_permitted_to_broadcast_owns_its_fan_groups(rules: Rules) -> None:
    decision = live_check(STREAMER, rules)
    assert decision.allowed
    assert decision.owner_account_id == decision.streamer_id == "streamer-1"
    assert decision.store_id == ""
    assert not decision.creator_becomes_admin


def test_E4_store_sub_account_streamer_makes_the_main_account_owner(rules: Rules) -> None:
    decision = live_check(STORE_STREAMER, rules, STORE)
    assert decision.allowed
    assert decision.owner_account_id == "main-1"
    assert decision.store_id == "store-1"
    assert decision.streamer_id == "streamer-2"
    assert decision.creator_becomes_admin


def test_E4_refuses_a_streamer_not_permitted_to_broadcast(rules: Rules) -> None:
    decision = live_check(dataclasses.replace(STREAMER, broadcast_permitted=False), rules)
    assert [(f.rule_id, f.reason) for f in decision.failures] == [("E4", "NOT_PERMITTED_TO_BROADCAST")]


def test_E4_refuses_a_store_streamer_whose_store_owner_is_unknown(rules: Rules) -> None:
    decision = live_check(STORE_STREAMER, rules)
    assert [(f.rule_id, f.reason) for f in decision.failures] == [("E4", "OWNER_UNKNOWN")]


@pytest.mark.parametrize("account", [MAIN, SUB, CONSUMER], ids=lambda a: a.role.value)
def test_E4_refuses_accounts_that_are_not_streamers(account: Account, rules: Rules) -> None:
    decision = live_check(account, rules, STORE)
    assert [(f.rule_id, f.reason) for f in decision.failures] == [("E4", "NOT_A_STREAMER")]


def test_E4_streamer_asking_for_a_store_group_fails_E1(rules: Rules) -> None:
    decision = store_check(good_store_facts(rules, account=STORE_STREAMER), rules)
    assert rule_ids(decision.failures) == ["E1"]


# --- E5, E6 ---------------------------------------------------------------------


def test_E5_a_store_at_group_level_L0_may_create(rules: Rules) -> None:
    # A store with no groups yet is at group level L0; no group level enters the check.
    fresh = good_store_facts(rules)
    assert store_check(fresh, rules).allowed
    assert "level" not in {f.name for f in dataclasses.fields(CreateFacts)}


def test_E6_reports_every_failed_condition_at_once_with_figures(rules: Rules) -> None:
    facts = CreateFacts(
        account=SUB,
        store=dataclasses.replace(STORE, operating_normally=False),
        paid_orders=12,
        content_levels=(level(0, NOW - timedelta(days=9)),),
    )
    decision = store_check(facts, rules)
    assert [(f.rule_id, f.reason) for f in decision.failures] == [
        ("E1", "NOT_STORE_MAIN_ACCOUNT"),
        ("E2", "STORE_NOT_OPERATING"),
        ("E2", "NOT_ENOUGH_PAID_ORDERS"),
        ("E2", "CONTENT_LEVEL_TOO_LOW"),
    ]
    assert "orders_30d 12 < 30" in [f.message for f in decision.failures]


# --- Joining ------------------------------------------------------------------------


def good_join_facts(rules: Rules, **changes: object) -> JoinFacts:
    facts = JoinFacts(
        account=CONSUMER,
        real_name_verified=True,
        taoqi_score=rules.join.min_taoqi_score,
        follows_store=True,
        spend_fen=10_000,
        in_crowd=True,
        fan_level=FanLevel.BELOVED,
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def store_join(**changes: object) -> JoinQuery:
    query = JoinQuery("consumer-1", GroupKind.STORE, FollowThreshold(), store_id="store-1")
    return dataclasses.replace(query, **changes)  # type: ignore[arg-type]


def live_join(min_level: FanLevel, **changes: object) -> JoinQuery:
    query = JoinQuery("consumer-1", GroupKind.LIVE, FanLevelThreshold(min_level), streamer_id="streamer-1")
    return dataclasses.replace(query, **changes)  # type: ignore[arg-type]


def join_rules(query: JoinQuery, facts: JoinFacts, rules: Rules) -> list[str]:
    return rule_ids(r.check_join(query, facts, rules.join).failures)


def test_join_admits_a_consumer_meeting_every_rule(rules: Rules) -> None:
    decision = r.check_join(store_join(), good_join_facts(rules), rules.join)
    assert decision.allowed
    assert not decision.below_score_bar


def test_C1_refuses_a_consumer_not_real_name_verified(rules: Rules) -> None:
    facts = good_join_facts(rules, real_name_verified=False)
    assert join_rules(store_join(), facts, rules) == ["C1"]


def test_C2_refuses_400_and_admits_401(rules: Rules) -> None:
    refused = r.check_join(store_join(), good_join_facts(rules, taoqi_score=400), rules.join)
    assert rule_ids(refused.failures) == ["C2"]
    assert refused.failures[0].figures == {"taoqi_score": "400", "required": "401"}
    assert refused.failures[0].message == "淘气值 400 < 401"
    assert r.check_join(store_join(), good_join_facts(rules, taoqi_score=401), rules.join).allowed


def test_C2_bar_comes_from_the_rules(rules: Rules) -> None:
    reading_001 = dataclasses.replace(rules, join=dataclasses.replace(rules.join, min_taoqi_score=400))
    assert join_rules(store_join(), good_join_facts(rules, taoqi_score=400), reading_001) == []


def test_C2_owner_and_admins_are_exempt(rules: Rules) -> None:
    facts = good_join_facts(rules, taoqi_score=0)
    assert join_rules(store_join(exempt_from_score=True), facts, rules) == []


def test_C3_below_score_bar_is_flagged_even_when_exempt(rules: Rules) -> None:
    exempt = r.check_join(store_join(exempt_from_score=True), good_join_facts(rules, taoqi_score=400), rules.join)
    assert exempt.allowed and exempt.below_score_bar
    at_bar = r.check_join(store_join(), good_join_facts(rules, taoqi_score=401), rules.join)
    assert not at_bar.below_score_bar


def test_C4_refuses_a_platform_blacklisted_consumer(rules: Rules) -> None:
    facts = good_join_facts(rules, platform_listing=PlatformListing(ListingSource.REPORTED))
    failure = by_rule(r.check_join(store_join(), facts, rules.join).failures, "C4")
    assert failure.reason == "PLATFORM_BLACKLISTED"


@pytest.mark.parametrize(
    ("source", "evidence", "text"),
    [(ListingSource.C6, 3, "C6: blacklisted by 3 merchants"), (ListingSource.C7, 6, "C7: 6 of the accounts")],
)
def test_C4_says_when_an_escalation_put_the_consumer_there(
    rules: Rules, source: ListingSource, evidence: int, text: str
) -> None:
    facts = good_join_facts(rules, platform_listing=PlatformListing(source, evidence))
    failure = by_rule(r.check_join(store_join(), facts, rules.join).failures, "C4")
    assert text in failure.message
    assert failure.figures["source"] == source.value


def test_C5_refuses_a_consumer_on_this_stores_blacklist(rules: Rules) -> None:
    facts = good_join_facts(rules, on_store_blacklist=True)
    assert join_rules(store_join(), facts, rules) == ["C5"]


def test_C5_needs_a_store(rules: Rules) -> None:
    facts = good_join_facts(rules, on_store_blacklist=True)
    assert join_rules(live_join(FanLevel.IRON), facts, rules) == []


def test_C6_escalates_at_3_merchants_not_2(rules: Rules) -> None:
    assert not r.c6_escalates(2, rules.join)
    assert r.c6_escalates(3, rules.join)
    assert r.c6_escalates(4, rules.join)


def test_C7_escalates_above_5_invitees_not_at_5(rules: Rules) -> None:
    assert not r.c7_escalates(5, rules.join)
    assert r.c7_escalates(6, rules.join)


def test_C6_C7_numbers_come_from_the_rules(rules: Rules) -> None:
    strict = dataclasses.replace(
        rules,
        join=dataclasses.replace(rules.join, merchant_blacklists_to_platform=2, blacklisted_invitees_to_platform=1),
    )
    assert r.c6_escalates(2, strict.join)
    assert r.c7_escalates(2, strict.join) and not r.c7_escalates(1, strict.join)


def test_C8_refuses_a_seller_account_of_another_store(rules: Rules) -> None:
    seller = dataclasses.replace(CONSUMER, own_store_id="store-9")
    failure = by_rule(r.check_join(store_join(), good_join_facts(rules, account=seller), rules.join).failures, "C8")
    assert failure.figures == {"own_store_id": "store-9", "store_id": "store-1"}


def test_C8_admits_a_seller_to_its_own_store_and_to_storeless_groups(rules: Rules) -> None:
    own = dataclasses.replace(CONSUMER, own_store_id="store-1")
    assert join_rules(store_join(), good_join_facts(rules, account=own), rules) == []
    elsewhere = dataclasses.replace(CONSUMER, own_store_id="store-9")
    assert join_rules(live_join(FanLevel.IRON), good_join_facts(rules, account=elsewhere), rules) == []


def test_C8_a_store_main_account_is_a_seller_account(rules: Rules) -> None:
    other_main = Account("main-9", Role.STORE_MAIN, store_id="store-9")
    assert join_rules(store_join(), good_join_facts(rules, account=other_main), rules) == ["C8"]


def test_C9_follow_threshold(rules: Rules) -> None:
    assert join_rules(store_join(), good_join_facts(rules, follows_store=False), rules) == ["C9"]


def test_C9_spend_threshold_at_and_below_the_bar(rules: Rules) -> None:
    query = store_join(threshold=SpendThreshold(50_000))
    assert join_rules(query, good_join_facts(rules, spend_fen=50_000), rules) == []
    refused = r.check_join(query, good_join_facts(rules, spend_fen=49_999), rules.join)
    failure = by_rule(refused.failures, "C9")
    assert failure.reason == "NOT_ENOUGH_SPEND"
    assert failure.figures["spend_yuan"] == "499.99"
    assert failure.figures["required_yuan"] == "500.00"
    assert failure.figures["spend_fen"] == "49999"
    assert failure.figures["required_fen"] == "50000"


def test_C9_spend_window_is_the_last_365_days(rules: Rules, clock: ManualClock) -> None:
    assert r.spend_window_start(clock.now(), rules.join) == NOW - timedelta(days=365)


def test_C9_password_threshold(rules: Rules) -> None:
    query = store_join(threshold=PasswordThreshold(passwords.digest("open sesame")))
    facts = good_join_facts(rules)
    assert join_rules(dataclasses.replace(query, supplied_password="open sesame"), facts, rules) == []
    assert join_rules(dataclasses.replace(query, supplied_password="open barley"), facts, rules) == ["C9"]
    assert join_rules(query, facts, rules) == ["C9"]


def test_C9_crowd_threshold(rules: Rules) -> None:
    query = store_join(threshold=CrowdThreshold("vip"))
    assert join_rules(query, good_join_facts(rules, in_crowd=True), rules) == []
    assert join_rules(query, good_join_facts(rules, in_crowd=False), rules) == ["C9"]


@pytest.mark.parametrize(
    ("min_level", "admitted"),
    [
        (FanLevel.IRON, {FanLevel.IRON, FanLevel.DIAMOND, FanLevel.BELOVED}),
        (FanLevel.DIAMOND, {FanLevel.DIAMOND, FanLevel.BELOVED}),
        (FanLevel.BELOVED, {FanLevel.BELOVED}),
    ],
)
def test_C10_fan_level_at_or_above_the_threshold(rules: Rules, min_level: FanLevel, admitted: set[FanLevel]) -> None:
    for fan_level in FanLevel:
        failures = join_rules(live_join(min_level), good_join_facts(rules, fan_level=fan_level), rules)
        assert failures == ([] if fan_level in admitted else ["C10"]), fan_level


def test_C10_figures_name_the_levels(rules: Rules) -> None:
    decision = r.check_join(live_join(FanLevel.DIAMOND), good_join_facts(rules, fan_level=FanLevel.IRON), rules.join)
    assert decision.failures[0].figures["fan_level"] == "IRON"
    assert decision.failures[0].figures["required"] == "DIAMOND"


def test_threshold_must_fit_the_group_kind(rules: Rules) -> None:
    assert r.threshold_fits(GroupKind.STORE, SpendThreshold(1))
    assert not r.threshold_fits(GroupKind.STORE, FanLevelThreshold(FanLevel.IRON))
    assert not r.threshold_fits(GroupKind.LIVE, FollowThreshold())
    with pytest.raises(ValueError):
        r.check_join(store_join(threshold=FanLevelThreshold(FanLevel.IRON)), JoinFacts(CONSUMER), rules.join)


def test_C14_a_refused_join_names_every_failed_rule(rules: Rules) -> None:
    seller = dataclasses.replace(CONSUMER, own_store_id="store-9")
    facts = JoinFacts(
        account=seller,
        platform_listing=PlatformListing(ListingSource.C6, 3),
        on_store_blacklist=True,
        spend_fen=100,
    )
    decision = r.check_join(store_join(threshold=SpendThreshold(50_000)), facts, rules.join)
    assert rule_ids(decision.failures) == ["C1", "C2", "C4", "C5", "C8", "C9"]
    assert all(f.message and f.reason for f in decision.failures)
    assert decision.below_score_bar


def test_yuan_is_exact() -> None:
    assert r.yuan(0) == "0.00"
    assert r.yuan(5) == "0.05"
    assert r.yuan(123456) == "1234.56"


def test_X2_what_if_counts_members_failing_and_newly_qualifying() -> None:
    from services.eligibility.rules import what_if

    members = {"a", "b", "c"}
    meets_current = {"a", "b", "c", "d"}
    meets_new = {"a", "e", "f"}
    known = {"a", "b", "c", "d", "e", "f", "g"}
    outcome = what_if(members, known, meets_current, meets_new)
    assert outcome.members_failing == 2  # b and c stay (C11) but would fail the new threshold
    assert outcome.newly_qualifying == 2  # e and f: meet the new one, not the current, not members
    assert outcome.known_consumers == 7


# --- Pinned by mutation testing (make mutation): each fails on a mutant that once survived ------------


def test_C14_live_fan_groups_check_the_platform_rules_too(rules: Rules) -> None:
    """C1, C2, C4, C5 and C8 hold in live fan groups as in store groups (no live-join test had such a consumer)."""
    seller = dataclasses.replace(CONSUMER, own_store_id="store-9")
    facts = JoinFacts(
        account=seller,
        platform_listing=PlatformListing(ListingSource.REPORTED),
        on_store_blacklist=True,
        fan_level=FanLevel.BELOVED,
    )
    query = live_join(FanLevel.IRON, store_id="store-1")
    assert join_rules(query, facts, rules) == ["C1", "C2", "C4", "C5", "C8"]
    assert join_rules(live_join(FanLevel.IRON), good_join_facts(rules, real_name_verified=False), rules) == ["C1"]


def test_C10_levels_keep_their_values_and_order() -> None:
    """ "Beloved only" must never admit a diamond fan: the stored values and the order are pinned."""
    assert [(level.name, int(level)) for level in FanLevel] == [
        ("NONE", 0),
        ("IRON", 1),
        ("DIAMOND", 2),
        ("BELOVED", 3),
    ]
    assert FanLevel.NONE < FanLevel.IRON < FanLevel.DIAMOND < FanLevel.BELOVED


def test_C1_to_C10_unknown_facts_take_the_refusing_default(rules: Rules) -> None:
    """A consumer nobody reported anything about meets no rule that needs a fact."""
    unknown = JoinFacts(account=CONSUMER)
    assert (unknown.real_name_verified, unknown.taoqi_score, unknown.platform_listing) == (False, 0, None)
    assert (unknown.follows_store, unknown.spend_fen, unknown.in_crowd, unknown.fan_level) == (
        False,
        0,
        False,
        FanLevel.NONE,
    )
    for threshold in (FollowThreshold(), SpendThreshold(1), CrowdThreshold("vip")):
        assert "C9" in join_rules(store_join(threshold=threshold), unknown, rules)
    assert "C10" in join_rules(live_join(FanLevel.IRON), unknown, rules)
    assert CreateFacts(account=MAIN).paid_orders == 0
    assert PlatformListing(ListingSource.REPORTED).evidence == 0
    assert Account("a", Role.CONSUMER).broadcast_permitted is False


def test_E3_visible_before_and_visible_from_agree_on_every_instant(rules: Rules) -> None:
    """The SQL cut-off (visible_before) and the rule (visible_from) are one E3, at every hour of a week.

    A store whose weekly recompute keeps the same level must keep creating on every day of the week.
    """
    market = rules.calendar.market
    start = datetime(2026, 8, 20, 0, 30, tzinfo=UTC)
    for hours in range(0, 24 * 7):
        updated = start + timedelta(hours=hours)
        update = level(1, updated)
        for later in (timedelta(hours=h) for h in range(0, 24 * 4, 5)):
            now = updated + later
            visible = r.content_level_visible_from(update, rules.create, market) <= now
            assert visible == (updated < r.content_level_visible_before(now, rules.create, market)), (updated, now)
    assert r.content_level_visible_before(datetime(2026, 8, 24, 12, 0, tzinfo=UTC), rules.create, market) == datetime(
        2026,
        8,
        22,
        16,
        0,
        tzinfo=UTC,  # updates made before Aug 23 00:00 in China are visible on Aug 24 there
    )
    weekly = good_store_facts(
        rules, content_levels=(level(1, NOW - timedelta(days=7)), level(1, NOW - timedelta(hours=1)))
    )
    for day in range(7):
        assert store_check(weekly, rules, NOW + timedelta(days=day)).allowed


def test_E3_the_earliest_pending_update_that_meets_the_bar_is_the_one_named(rules: Rules) -> None:
    market = rules.calendar.market
    old = level(0, NOW - timedelta(days=10))
    first, second = level(1, NOW - timedelta(hours=20)), level(2, NOW - timedelta(hours=2))
    seen = r.content_level_as_seen((old, second, first), NOW, rules.create, market)
    assert (seen.level, seen.pending) == (0, first)
    # A pending downgrade is no news for E2: it is not named as what will count.
    downgrade = r.content_level_as_seen((level(1, NOW - timedelta(days=10)), level(0, NOW)), NOW, rules.create, market)
    assert (downgrade.level, downgrade.pending) == (1, None)
    below = r.content_level_as_seen((old, level(0, NOW - timedelta(hours=1))), NOW, rules.create, market)
    assert below.pending is None


def test_E1_texts_name_the_account_and_what_it_is(rules: Rules) -> None:
    assert store_check(good_store_facts(rules, account=SUB), rules).failures[0].message == (
        "account sub-1 is a sub-account; only a store's main account creates store groups"
    )
    assert store_check(CreateFacts(account=STREAMER), rules).failures[0].message == (
        "account streamer-1 is a streamer; only a store's main account creates store groups"
    )
    orphan = Account("main-9", Role.STORE_MAIN)
    assert store_check(CreateFacts(account=orphan), rules).failures[0].message == (
        "store (none) of account main-9 is unknown"
    )
    lost = Account("main-9", Role.STORE_MAIN, store_id="store-9")
    assert (
        store_check(CreateFacts(account=lost), rules).failures[0].message
        == "store store-9 of account main-9 is unknown"
    )


def test_E2_texts_say_why_a_store_does_not_operate(rules: Rules) -> None:
    closed = dataclasses.replace(STORE, operating_normally=False)
    assert by_rule(store_check(good_store_facts(rules, store=closed), rules).failures, "E2").message == (
        "store store-1 is not operating normally"
    )
    unreported = store_check(good_store_facts(rules, store=None), rules).failures
    assert [f.message for f in unreported if f.reason == "STORE_NOT_OPERATING"] == [
        "store store-1 has no reported status"
    ]


def test_P3_an_order_counts_from_the_marketplace_day_it_was_paid(rules: Rules) -> None:
    market = rules.calendar.market
    tomorrow = market.next_day_start(NOW)  # 00:00 in China, 16:00 UTC
    assert r.is_old_customer([NOW - timedelta(days=2), NOW], NOW, rules.push, market)
    assert r.is_old_customer([NOW - timedelta(days=2), tomorrow - timedelta(microseconds=1)], NOW, rules.push, market)
    assert not r.is_old_customer([NOW - timedelta(days=2), tomorrow], NOW, rules.push, market)


def test_yuan_is_exact_at_every_digit() -> None:
    assert r.yuan(100) == "1.00"
    assert r.yuan(199) == "1.99"
    assert r.yuan(-1) == "-0.01"
    assert r.yuan(-5) == "-0.05"
    assert r.yuan(-12_345) == "-123.45"


def test_E1_a_main_role_the_store_does_not_name_reads_whose_main_account_it_is(rules: Rules) -> None:
    """E1's refusal a merchant reads: the store, its main account and the caller, with the figures."""
    impostor = Account("main-2", Role.STORE_MAIN, store_id="store-1")
    [failure] = store_check(good_store_facts(rules, account=impostor), rules).failures
    assert failure.message == "store store-1's main account is main-1, not main-2"
    assert failure.figures == {"account_id": "main-2", "role": "store_main", "main_account_id": "main-1"}
    [sub] = store_check(good_store_facts(rules, account=SUB), rules).failures
    assert sub.figures == {"account_id": "sub-1", "role": "store_sub"}


def test_E2_texts_and_figures_a_merchant_reads(rules: Rules) -> None:
    """E2: the 微淘 level as "微淘 L0 < L1", the store named, and the order figures from the rules file."""
    too_low = store_check(good_store_facts(rules, content_levels=(level(0, NOW - timedelta(days=10)),)), rules)
    assert by_rule(too_low.failures, "E2").message == "微淘 L0 < L1"
    closed = dataclasses.replace(STORE, operating_normally=False)
    assert by_rule(store_check(good_store_facts(rules, store=closed), rules).failures, "E2").figures == {
        "store_id": "store-1"
    }
    weekly = dataclasses.replace(
        rules, create=dataclasses.replace(rules.create, min_paid_orders=7, paid_orders_window_days=7)
    )
    [orders] = store_check(good_store_facts(rules, paid_orders=6), weekly).failures
    assert orders.message == "orders_7d 6 < 7"
    assert orders.figures == {"paid_orders": "6", "required": "7", "window_days": "7"}


def test_E2_E3_a_level_not_yet_visible_reads_when_it_was_updated_and_from_when_it_counts(rules: Rules) -> None:
    updated = datetime(2026, 8, 22, 9, 30, tzinfo=UTC)  # 17:30 on Aug 22 in China (D1)
    facts = good_store_facts(rules, content_levels=(level(0, NOW - timedelta(days=10)), level(2, updated)))
    [failure] = store_check(facts, rules, datetime(2026, 8, 23, 12, 0, tzinfo=UTC)).failures
    assert failure.message == (
        "微淘 L0 < L1; L2 (updated 2026-08-22 17:30 UTC+8) counts from 2026-08-24 00:00 UTC+8 (E3)"
    )
    assert failure.figures == {
        "content_level": "0",
        "required": "1",
        "pending_level": "2",
        "visible_from": "2026-08-23T16:00:00+00:00",
    }
