"""The push rules as plain functions: edges of every number and every time rule (SPEC P1, P2, P4–P6, P8, X3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.common.calendar import MarketCalendar
from services.common.rules import PushRules, Rules, RulesError, load_rules
from services.push import rules as r
from services.push.rules import AccountFacts, GrantView, PushKind, QuotaState

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
CST = MarketCalendar(8)  # D1: China Standard Time


@pytest.fixture
def push(rules: Rules) -> PushRules:
    return rules.push


def codes(failures: Any) -> list[tuple[str, str]]:
    return [(f.rule_id, f.reason) for f in failures]


TIER1 = AccountFacts(subscribers=0, old_customer_fans=50, recent_broadcasts=5)
TIER2 = AccountFacts(subscribers=0, old_customer_fans=1000, recent_broadcasts=0, revisit_rate_bp=500)


def test_defaults_carry_the_spec_numbers_P1_P2_P6(push: PushRules) -> None:
    assert (push.subscription_min_subscribers, push.subscription_interval_days) == (10, 10)
    assert (push.tier1_min_old_customer_fans, push.tier1_min_broadcasts, push.broadcast_window_days) == (50, 5, 7)
    assert (push.tier2_min_old_customer_fans, push.tier2_min_revisit_rate_bp) == (1000, 500)
    assert (push.tier1_audience, push.tier2_audience, push.recall_per_year) == (30_000, 100_000, 2)
    assert (push.old_customer_min_days, push.old_customer_window_months) == (2, 6)
    assert push.review_delay_hours == 24 and push.return_quota_on_reject and push.return_quota_on_cancel


# --- P1 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("subscribers", "allowed"), [(9, False), (10, True), (11, True)])
def test_p1_needs_10_subscribers(push: PushRules, subscribers: int, allowed: bool) -> None:
    failures = r.p1_conditions(AccountFacts(subscribers=subscribers), push)
    assert (failures == []) is allowed
    if failures:
        assert failures[0].figures == {"subscribers": str(subscribers), "required": "10"}


@pytest.mark.parametrize(
    ("elapsed", "allowed"),
    [
        (timedelta(0), False),
        (timedelta(days=10) - timedelta(microseconds=1), False),
        (timedelta(days=10), True),
        (timedelta(days=30), True),
    ],
)
def test_p1_one_per_10_days_the_end_of_the_interval_allowed(push: PushRules, elapsed: timedelta, allowed: bool) -> None:
    last = NOW - elapsed
    failures = r.p1_interval(last, NOW, push)
    assert (failures == []) is allowed
    assert r.p1_next_possible(last, push) == last + timedelta(days=10)
    if failures:
        assert codes(failures) == [("P1", "SUBSCRIPTION_INTERVAL")]
        assert failures[0].figures["next_possible_at"] == (last + timedelta(days=10)).isoformat()
    assert r.p1_interval(None, NOW, push) == []


# --- P2 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (TIER1, []),
        (replace(TIER1, old_customer_fans=49), [("P2", "NOT_ENOUGH_OLD_CUSTOMER_FANS")]),
        (replace(TIER1, recent_broadcasts=4), [("P2", "NOT_ENOUGH_BROADCASTS")]),
        (
            AccountFacts(),
            [("P2", "NOT_ENOUGH_OLD_CUSTOMER_FANS"), ("P2", "NOT_ENOUGH_BROADCASTS")],
        ),
    ],
)
def test_p2_tier1_thresholds_at_the_boundaries(push: PushRules, facts: AccountFacts, expected: Any) -> None:
    assert codes(r.tier_conditions(PushKind.RECALL_TIER_1, facts, push)) == expected


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (TIER2, []),
        (replace(TIER2, old_customer_fans=999), [("P2", "NOT_ENOUGH_OLD_CUSTOMER_FANS")]),
        (replace(TIER2, revisit_rate_bp=499), [("P2", "REVISIT_RATE_TOO_LOW")]),
        (replace(TIER2, revisit_rate_bp=None), [("P2", "REVISIT_RATE_TOO_LOW")]),
    ],
)
def test_p2_tier2_thresholds_at_the_boundaries(push: PushRules, facts: AccountFacts, expected: Any) -> None:
    failures = r.tier_conditions(PushKind.RECALL_TIER_2, facts, push)
    assert codes(failures) == expected
    if expected == [("P2", "REVISIT_RATE_TOO_LOW")] and facts.revisit_rate_bp == 499:
        assert failures[0].message == "tier 2: fan revisit rate 4.99% < 5.00%"


def test_p2_tier_audiences(push: PushRules) -> None:
    assert r.audience_limit(PushKind.RECALL_TIER_1, push) == 30_000
    assert r.audience_limit(PushKind.RECALL_TIER_2, push) == 100_000
    assert r.audience_limit(PushKind.SUBSCRIPTION, push) == 0  # every subscriber
    assert r.audience_limit(PushKind.MASS_SEND, push, GrantView("g", 777)) == 777  # P5: the grant's size


def test_p2_one_per_tier_per_calendar_year(push: PushRules) -> None:
    assert r.recall_quota(PushKind.RECALL_TIER_1, [], NOW, push, CST) == []
    assert r.recall_quota(PushKind.RECALL_TIER_2, [PushKind.RECALL_TIER_1], NOW, push, CST) == []
    used = r.recall_quota(PushKind.RECALL_TIER_1, [PushKind.RECALL_TIER_1], NOW, push, CST)
    assert codes(used) == [("P2", "RECALL_TIER_USED")]
    assert used[0].figures["next_possible_at"] == "2026-12-31T16:00:00+00:00"
    one_a_year = replace(push, recall_per_year=1)
    assert codes(r.recall_quota(PushKind.RECALL_TIER_2, [PushKind.RECALL_TIER_1], NOW, one_a_year, CST)) == [
        ("P2", "RECALL_YEAR_USED")
    ]


@pytest.mark.parametrize(
    ("instant", "year"),
    [
        (datetime(2026, 12, 31, 15, 59, 59, tzinfo=UTC), 2026),  # 23:59:59 China Standard Time
        (datetime(2026, 12, 31, 16, 0, tzinfo=UTC), 2027),  # 00:00 on Jan 1 there
        (datetime(2027, 1, 1, 0, 0, tzinfo=UTC), 2027),
    ],
)
def test_p2_calendar_year_resets_at_local_midnight(push: PushRules, instant: datetime, year: int) -> None:
    assert r.year_of(instant, CST) == year
    assert r.next_year_start(instant - timedelta(days=1), CST) == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    assert r.year_of(datetime(2026, 12, 31, 16, 0, tzinfo=UTC), MarketCalendar(0)) == 2026


# --- P5 ----------------------------------------------------------------------------------------


def test_p5_a_grant_per_message(push: PushRules) -> None:
    assert codes(r.p5_grant("g1", None)) == [("P5", "NO_MASS_SEND_GRANT")]
    assert r.p5_grant("g1", GrantView("g1", 10)) == []
    assert codes(r.p5_grant("g1", GrantView("g1", 10, push_id="ps_1"))) == [("P5", "GRANT_ALREADY_USED")]


def test_p5_a_mass_send_naming_no_grant_is_p5s_refusal_not_a_bad_request(push: PushRules) -> None:
    """P5, X1: no grant_id is the same rule and reason as an unknown grant, so FAILED_PRECONDITION citing P5."""
    failures = r.submission_failures(PushKind.MASS_SEND, AccountFacts(), QuotaState(), NOW, push, CST)
    assert codes(failures) == [("P5", "NO_MASS_SEND_GRANT")]
    assert failures[0].figures == {"grant_id": ""} and "grant_id" in failures[0].message
    assert not r.only_quota(failures)  # a condition unmet, not a quota spent


def test_a_spent_quota_alone_is_resource_exhausted(push: PushRules) -> None:
    spent = r.submission_failures(
        PushKind.RECALL_TIER_1, TIER1, QuotaState(recall_used=frozenset({PushKind.RECALL_TIER_1})), NOW, push, CST
    )
    assert r.only_quota(spent)
    unmet_and_spent = r.submission_failures(
        PushKind.RECALL_TIER_1,
        AccountFacts(),
        QuotaState(recall_used=frozenset({PushKind.RECALL_TIER_1})),
        NOW,
        push,
        CST,
    )
    assert codes(unmet_and_spent)[-1] == ("P2", "RECALL_TIER_USED") and not r.only_quota(unmet_and_spent)


# --- P6 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approved_after", "sent_after"),
    [
        (timedelta(hours=1), timedelta(hours=24)),  # approved early: 24 h after submission
        (timedelta(hours=24), timedelta(hours=24)),
        (timedelta(hours=30), timedelta(hours=30)),  # approved late: at approval
    ],
)
def test_p6_24_hour_delay_or_late_approval(push: PushRules, approved_after: timedelta, sent_after: timedelta) -> None:
    assert r.send_at(NOW, NOW + approved_after, push) == NOW + sent_after


def test_p8_the_review_window_ends_with_the_rules_delay(push: PushRules) -> None:
    """P6, P8: the window a reviewer has is the delay of the rules file; approval by then keeps the send time."""
    end = r.review_window_end(NOW, push)
    assert end == NOW + timedelta(hours=24) == r.send_at(NOW, end, push)
    assert r.review_window_end(NOW, replace(push, review_delay_hours=48)) == NOW + timedelta(hours=48)
    assert r.send_at(NOW, end + timedelta(seconds=1), push) == end + timedelta(seconds=1)  # late review, late send


def test_p6_returning_the_quota_is_a_rules_file_switch(push: PushRules) -> None:
    assert r.returns_quota("reject", push) and r.returns_quota("cancel", push)
    assert not r.returns_quota("reject", replace(push, return_quota_on_reject=False))
    assert not r.returns_quota("cancel", replace(push, return_quota_on_cancel=False))


# --- P4, X3 ------------------------------------------------------------------------------------


def test_p4_earned_only_when_met_and_unspent(push: PushRules) -> None:
    both = AccountFacts(old_customer_fans=1000, recent_broadcasts=5, revisit_rate_bp=500)
    assert r.earned_tiers(both, QuotaState(), NOW, push, CST) == [PushKind.RECALL_TIER_1, PushKind.RECALL_TIER_2]
    assert r.earned_tiers(both, QuotaState(recall_used=frozenset({PushKind.RECALL_TIER_1})), NOW, push, CST) == [
        PushKind.RECALL_TIER_2
    ]
    assert r.earned_tiers(replace(both, recent_broadcasts=4, revisit_rate_bp=None), QuotaState(), NOW, push, CST) == []


def test_x3_ledger_remaining_next_possible_and_unmet(push: PushRules) -> None:
    quota = QuotaState(
        last_subscription_at=NOW - timedelta(days=3),
        recall_used=frozenset({PushKind.RECALL_TIER_2}),
        unused_grants=(GrantView("g1", 500), GrantView("g2", 800)),
    )
    facts = AccountFacts(subscribers=20, old_customer_fans=60, recent_broadcasts=2, revisit_rate_bp=700)
    entries = {e.kind: e for e in r.ledger(facts, quota, NOW, push, CST)}
    sub = entries[PushKind.SUBSCRIPTION]
    assert (sub.remaining, sub.available_now) == (0, False)
    assert sub.next_possible_at == NOW + timedelta(days=7)
    assert codes(list(sub.unmet)) == [("P1", "SUBSCRIPTION_INTERVAL")]
    t1 = entries[PushKind.RECALL_TIER_1]
    assert (t1.remaining, t1.next_possible_at, t1.audience_size) == (1, None, 30_000)
    assert codes(list(t1.unmet)) == [("P2", "NOT_ENOUGH_BROADCASTS")]
    t2 = entries[PushKind.RECALL_TIER_2]
    assert (t2.remaining, t2.next_possible_at) == (0, datetime(2026, 12, 31, 16, 0, tzinfo=UTC))
    assert codes(list(t2.unmet)) == [("P2", "NOT_ENOUGH_OLD_CUSTOMER_FANS"), ("P2", "RECALL_TIER_USED")]
    mass = entries[PushKind.MASS_SEND]
    assert (mass.remaining, mass.available_now, mass.audience_size) == (2, True, 800)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[push]\nreturn_quota_on_reject = false\n", True),
        ("[push]\nreturn_quota_on_reject = 1\n", False),  # a switch is true or false, not a number
        ("[push]\ntier1_audience = true\n", False),
        ("[push]\nsubscription_interval_days = -1\n", False),
    ],
)
def test_p6_switches_and_numbers_come_from_the_rules_file(tmp_path: Path, text: str, ok: bool) -> None:
    override = tmp_path / "rules.toml"
    override.write_text(text)
    if ok:
        assert not load_rules(env={"QUN_RULES_FILE": str(override)}).push.return_quota_on_reject
    else:
        with pytest.raises(RulesError):
            load_rules(env={"QUN_RULES_FILE": str(override)})


# --- Pinned by mutation testing (make mutation): each fails on a mutant that once survived --------


def test_P2_tier_numbers_are_1_and_2_and_0_for_other_kinds(push: PushRules) -> None:
    """The tier a recall push names in its figures, refusals and notices (P2, P4); 0 for P1 and P5."""
    assert {kind: kind.tier for kind in PushKind} == {
        PushKind.SUBSCRIPTION: 0,
        PushKind.RECALL_TIER_1: 1,
        PushKind.RECALL_TIER_2: 2,
        PushKind.MASS_SEND: 0,
    }
    [used] = r.recall_quota(PushKind.RECALL_TIER_2, [PushKind.RECALL_TIER_2], NOW, push, CST)
    assert (used.message, used.figures["tier"]) == ("recall tier 2 already used in 2026", "2")
    [fans] = r.tier_conditions(PushKind.RECALL_TIER_2, replace(TIER2, old_customer_fans=999), push)
    assert fans.message == "tier 2: old-customer fans (P3) 999 < 1000"
    assert fans.figures == {"tier": "2", "old_customer_fans": "999", "required": "1000"}
    assert r.notice_text(PushKind.RECALL_TIER_2, 2026, push) == (
        "Recall push chance earned: tier 2 for 2026, reaching up to 100,000 old customers who are not fans (P2, P4)"
    )


def test_P2_tier2_revisit_rate_figure_is_the_rate_in_basis_points_or_blank_when_unknown(push: PushRules) -> None:
    [low] = r.tier_conditions(PushKind.RECALL_TIER_2, replace(TIER2, revisit_rate_bp=499), push)
    assert low.figures == {"tier": "2", "revisit_rate_bp": "499", "required_bp": "500"}
    [unknown] = r.tier_conditions(PushKind.RECALL_TIER_2, replace(TIER2, revisit_rate_bp=None), push)
    assert unknown.figures == {"tier": "2", "revisit_rate_bp": "", "required_bp": "500"}
    assert unknown.message == "tier 2: fan revisit rate unknown < 5.00%"


def test_P1_P2_an_account_nobody_counted_has_no_subscribers_fans_or_broadcasts(push: PushRules) -> None:
    """Unknown figures take the refusing default, and a refusal shows them as 0, not 1 or -1."""
    nothing = AccountFacts()
    assert (nothing.subscribers, nothing.old_customer_fans, nothing.recent_broadcasts) == (0, 0, 0)
    assert nothing.revisit_rate_bp is None
    [p1] = r.p1_conditions(nothing, push)
    assert p1.message == "subscribers 0 < 10"
    tier1 = r.tier_conditions(PushKind.RECALL_TIER_1, nothing, push)
    assert [f.message for f in tier1] == [
        "tier 1: old-customer fans (P3) 0 < 50",
        "tier 1: broadcasts in the last 7 days 0 < 5",
    ]


def test_P1_a_subscription_submission_lists_the_conditions_then_the_interval(push: PushRules) -> None:
    """P1 through submission_failures: every subscription draft goes this way, allowed or refused."""
    ready = AccountFacts(subscribers=10)
    assert r.submission_failures(PushKind.SUBSCRIPTION, ready, QuotaState(), NOW, push, CST) == []
    recent = QuotaState(last_subscription_at=NOW - timedelta(days=1))
    failures = r.submission_failures(PushKind.SUBSCRIPTION, AccountFacts(subscribers=9), recent, NOW, push, CST)
    assert codes(failures) == [("P1", "NOT_ENOUGH_SUBSCRIBERS"), ("P1", "SUBSCRIPTION_INTERVAL")]
    assert not r.only_quota(failures)
    spent = r.submission_failures(PushKind.SUBSCRIPTION, ready, recent, NOW, push, CST)
    assert codes(spent) == [("P1", "SUBSCRIPTION_INTERVAL")] and r.only_quota(spent)


def test_P5_a_mass_send_without_a_grant_has_no_audience_size_of_its_own(push: PushRules) -> None:
    """The size is the grant's (P5); with none there is none (create_draft refuses such a push by P5 first)."""
    assert r.audience_limit(PushKind.MASS_SEND, push) == 0
    assert r.audience_limit(PushKind.MASS_SEND, push, None) == 0
    assert r.audience_limit(PushKind.MASS_SEND, push, GrantView("g", 1)) == 1


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (r.PushState.CANCELLED, "PUSH_CANCELLED"),
        (r.PushState.APPROVED, "PUSH_ALREADY_REVIEWED"),
        (r.PushState.REJECTED, "PUSH_ALREADY_REVIEWED"),
        (r.PushState.SENT, "PUSH_ALREADY_REVIEWED"),
    ],
)
def test_P6_a_decision_on_a_push_not_pending_says_whether_it_was_cancelled(state: r.PushState, reason: str) -> None:
    failure = r.not_pending("ps_1", state)
    assert (failure.rule_id, failure.reason) == ("P6", reason)
    assert failure.figures == {"push_id": "ps_1", "state": state.value}
    assert failure.message == (
        f"push ps_1 is {state.value.replace('_', ' ')}; only a push pending review can be reviewed"
    )


def test_X3_a_fresh_account_has_one_subscription_push_reaching_every_subscriber(push: PushRules) -> None:
    """X3, P1: one push left (not 2, not 0), audience 0 = every subscriber (not 1), possible now."""
    entries = {e.kind: e for e in r.ledger(AccountFacts(subscribers=10), QuotaState(), NOW, push, CST)}
    sub = entries[PushKind.SUBSCRIPTION]
    assert (sub.remaining, sub.audience_size, sub.next_possible_at, sub.unmet) == (1, 0, None, ())
    assert sub.available_now
    assert r.LedgerEntry(PushKind.SUBSCRIPTION, 1, (), None).audience_size == 0


def test_X3_P5_without_grants_the_mass_send_entry_has_nothing_left_and_says_why(push: PushRules) -> None:
    entries = {e.kind: e for e in r.ledger(AccountFacts(), QuotaState(), NOW, push, CST)}
    mass = entries[PushKind.MASS_SEND]
    assert (mass.remaining, mass.audience_size, mass.next_possible_at, mass.available_now) == (0, 0, None, False)
    assert codes(list(mass.unmet)) == [("P5", "NO_MASS_SEND_GRANT")]
    assert mass.unmet[0].figures == {"grant_id": "(none)"}
