"""The push rules of SPEC (P1, P2, P4, P5, P6, P8, X3) as plain functions.

Every function takes plain values and the numbers of ``services.common.rules``
(never literals) and returns the ``Failure`` of each rule that refuses, so a
refusal and the quota ledger list every unmet condition with its figures
(SPEC X1, X3). "Now" is an argument; the servicer reads it from its Clock.
P3 (who is an old-customer fan) is the eligibility service's, which counts
them from the orders it holds; these rules read the count.

Over 400 lines on purpose: one plain function per SPEC rule of P1–P8 and X3, scored as one module by the
mutation tests (``tests/mutation``); the kinds' declarations are in ``kinds``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from services.common.calendar import MarketCalendar
from services.common.errors import Failure
from services.common.rules import PushRules
from services.push.kinds import DECLARATIONS, Quota, kinds_with
from services.push.kinds import PushKind as PushKind  # part of the rules' vocabulary: callers name it from here

# Each kind's rule and quota, as ``kinds`` declares them.
RULE_OF_KIND = {d.kind: d.rule_id for d in DECLARATIONS}
RECALL_KINDS = kinds_with(Quota.YEARLY_SLOT)


class PushState(StrEnum):
    DRAFT = "draft"  # being filled by the gateway
    DISCARDED = "discarded"  # a draft dropped before submission
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    SENDING = "sending"
    SENT = "sent"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


SUBMITTED_STATES = frozenset(
    {
        PushState.PENDING_REVIEW,
        PushState.APPROVED,
        PushState.SENDING,
        PushState.SENT,
        PushState.REJECTED,
        PushState.CANCELLED,
    }
)
DUE_STATES = (PushState.APPROVED, PushState.SENDING)
CANCELLABLE_STATES = frozenset({PushState.PENDING_REVIEW, PushState.APPROVED})

# Refusals that mean "this period's quota is spent" (RESOURCE_EXHAUSTED), not "conditions unmet".
QUOTA_REASONS = frozenset({"SUBSCRIPTION_INTERVAL", "RECALL_TIER_USED", "RECALL_YEAR_USED", "GRANT_ALREADY_USED"})


@dataclass(frozen=True)
class AccountFacts:
    """The figures of the account the eligibility service counted (P1, P2, P3)."""

    subscribers: int = 0
    old_customer_fans: int = 0
    recent_broadcasts: int = 0
    revisit_rate_bp: int | None = None


@dataclass(frozen=True)
class GrantView:
    grant_id: str
    audience_size: int
    push_id: str = ""  # the push that used it


@dataclass(frozen=True)
class QuotaState:
    """What the account has spent, as the push database records it."""

    # The latest subscription push that counts toward the P1 interval.
    last_subscription_at: datetime | None = None
    # Recall tiers spent in the current calendar year (P2).
    recall_used: frozenset[PushKind] = frozenset()
    # Mass-send grants not used yet (P5).
    unused_grants: tuple[GrantView, ...] = ()


# --- Calendar (P2) ------------------------------------------------------------------


def year_of(now: datetime, market: MarketCalendar) -> int:
    """P2: the calendar year an instant falls in, in the marketplace's time zone (D1)."""
    return market.year(now)


def next_year_start(now: datetime, market: MarketCalendar) -> datetime:
    """The instant the next marketplace year begins (Jan 1 00:00 local)."""
    return market.year_start(market.year(now) + 1)


# --- P1 subscription push -------------------------------------------------------------


def p1_conditions(facts: AccountFacts, rules: PushRules) -> list[Failure]:
    """P1: at least ``subscription_min_subscribers`` subscribed fans."""
    if facts.subscribers >= rules.subscription_min_subscribers:
        return []
    need = rules.subscription_min_subscribers
    return [
        Failure(
            "P1",
            "NOT_ENOUGH_SUBSCRIBERS",
            f"subscribers {facts.subscribers} < {need}",
            {"subscribers": str(facts.subscribers), "required": str(need)},
        )
    ]


def p1_next_possible(last_subscription_at: datetime | None, rules: PushRules) -> datetime | None:
    """P1: one subscription push per ``subscription_interval_days``, counted from the last submission."""
    if last_subscription_at is None:
        return None
    return last_subscription_at + timedelta(days=rules.subscription_interval_days)


def p1_interval(last_subscription_at: datetime | None, now: datetime, rules: PushRules) -> list[Failure]:
    """P1: refuses until the interval since the last subscription push has passed (the end is allowed)."""
    next_at = p1_next_possible(last_subscription_at, rules)
    if next_at is None or now >= next_at:
        return []
    assert last_subscription_at is not None
    days = rules.subscription_interval_days
    return [
        Failure(
            "P1",
            "SUBSCRIPTION_INTERVAL",
            f"one subscription push per {days} days: the last was submitted "
            f"{last_subscription_at:%Y-%m-%d %H:%M} UTC, the next is possible from {next_at:%Y-%m-%d %H:%M} UTC",
            {
                "last_submitted_at": last_subscription_at.isoformat(),
                "next_possible_at": next_at.isoformat(),
                "interval_days": str(days),
            },
        )
    ]


# --- P2 recall push ---------------------------------------------------------------------


def tier_audience(kind: PushKind, rules: PushRules) -> int:
    """P2: how many old customers who are not fans a tier reaches."""
    return rules.tier1_audience if kind is PushKind.RECALL_TIER_1 else rules.tier2_audience


def tier_conditions(kind: PushKind, facts: AccountFacts, rules: PushRules) -> list[Failure]:
    """P2 (with P3's old-customer fans): every unmet condition of the tier, with figures."""
    tier = kind.tier
    failures: list[Failure] = []
    need_fans = rules.tier1_min_old_customer_fans if tier == 1 else rules.tier2_min_old_customer_fans
    if facts.old_customer_fans < need_fans:
        failures.append(
            Failure(
                "P2",
                "NOT_ENOUGH_OLD_CUSTOMER_FANS",
                f"tier {tier}: old-customer fans (P3) {facts.old_customer_fans} < {need_fans}",
                {"tier": str(tier), "old_customer_fans": str(facts.old_customer_fans), "required": str(need_fans)},
            )
        )
    if tier == 1:
        need = rules.tier1_min_broadcasts
        if facts.recent_broadcasts < need:
            days = rules.broadcast_window_days
            failures.append(
                Failure(
                    "P2",
                    "NOT_ENOUGH_BROADCASTS",
                    f"tier 1: broadcasts in the last {days} days {facts.recent_broadcasts} < {need}",
                    {
                        "tier": "1",
                        "recent_broadcasts": str(facts.recent_broadcasts),
                        "required": str(need),
                        "window_days": str(days),
                    },
                )
            )
    else:
        need = rules.tier2_min_revisit_rate_bp
        rate = facts.revisit_rate_bp
        if rate is None or rate < need:
            shown = "unknown" if rate is None else percent(rate)
            failures.append(
                Failure(
                    "P2",
                    "REVISIT_RATE_TOO_LOW",
                    f"tier 2: fan revisit rate {shown} < {percent(need)}",
                    {
                        "tier": "2",
                        "revisit_rate_bp": "" if rate is None else str(rate),
                        "required_bp": str(need),
                    },
                )
            )
    return failures


def recall_quota(
    kind: PushKind, used: Iterable[PushKind], now: datetime, rules: PushRules, market: MarketCalendar
) -> list[Failure]:
    """P2: one push per tier per calendar year, and ``recall_per_year`` in all."""
    used = frozenset(used)
    year = year_of(now, market)
    figures = {"tier": str(kind.tier), "year": str(year), "next_possible_at": next_year_start(now, market).isoformat()}
    if kind in used:
        return [Failure("P2", "RECALL_TIER_USED", f"recall tier {kind.tier} already used in {year}", figures)]
    if len(used) >= rules.recall_per_year:
        return [
            Failure(
                "P2",
                "RECALL_YEAR_USED",
                f"{len(used)} of {rules.recall_per_year} recall pushes already used in {year}",
                {**figures, "used": str(len(used)), "allowed": str(rules.recall_per_year)},
            )
        ]
    return []


def percent(bp: int) -> str:
    """Basis points as a percentage with two decimals, exactly (500 → "5.00%")."""
    return f"{bp // 100}.{bp % 100:02d}%"


# --- P5 mass-send -----------------------------------------------------------------------


def p5_grant(grant_id: str, grant: GrantView | None) -> list[Failure]:
    """P5: only with a grant of this store, each grant for one message.

    A mass-send that names no grant is refused here too, as P5 and not as a
    malformed request: the request is well formed, the account lacks what P5
    requires (FAILED_PRECONDITION, like an unknown grant).
    """
    if not grant_id:
        return [
            Failure(
                "P5",
                "NO_MASS_SEND_GRANT",
                "a mass-send push needs an official activity's grant, named by grant_id; none was named",
                {"grant_id": ""},
            )
        ]
    if grant is None:
        return [
            Failure(
                "P5",
                "NO_MASS_SEND_GRANT",
                f"no mass-send grant {grant_id} for this account; mass-send needs an official activity's grant",
                {"grant_id": grant_id},
            )
        ]
    if grant.push_id:
        return [
            Failure(
                "P5",
                "GRANT_ALREADY_USED",
                f"grant {grant_id} was already used by push {grant.push_id}",
                {"grant_id": grant_id, "push_id": grant.push_id},
            )
        ]
    return []


# --- A submission (P1, P2, P5) -----------------------------------------------------------


def submission_failures(
    kind: PushKind,
    facts: AccountFacts,
    quota: QuotaState,
    now: datetime,
    rules: PushRules,
    market: MarketCalendar,
    *,
    grant_id: str = "",
    grant: GrantView | None = None,
) -> list[Failure]:
    """Every rule that refuses a push of this kind now: conditions first, then the quota."""
    if kind is PushKind.SUBSCRIPTION:
        return p1_conditions(facts, rules) + p1_interval(quota.last_subscription_at, now, rules)
    if kind in RECALL_KINDS:
        return tier_conditions(kind, facts, rules) + recall_quota(kind, quota.recall_used, now, rules, market)
    return p5_grant(grant_id, grant)


def audience_limit(kind: PushKind, rules: PushRules, grant: GrantView | None = None) -> int:
    """How many recipients a push may have: the tier's (P2) or the grant's (P5) size; 0 is "all" (P1)."""
    if kind in RECALL_KINDS:
        return tier_audience(kind, rules)
    if kind is PushKind.MASS_SEND:
        return grant.audience_size if grant is not None else 0
    return 0


def only_quota(failures: Iterable[Failure]) -> bool:
    """A refusal only because the period's quota is spent (RESOURCE_EXHAUSTED)."""
    return all(f.reason in QUOTA_REASONS for f in failures)


def empty_audience(kind: PushKind) -> Failure:
    return Failure(
        kind.rule_id,
        "AUDIENCE_EMPTY",
        f"a {kind.value.replace('_', ' ')} push here would reach nobody; the quota is kept",
        {"audience_size": "0"},
    )


# --- Review and schedule (P6) -----------------------------------------------------------


def review_window_end(submitted_at: datetime, rules: PushRules) -> datetime:
    """P6, P8: the end of a push's review window (24 hours after submission): approved by then, it goes then."""
    return submitted_at + timedelta(hours=rules.review_delay_hours)


def send_at(submitted_at: datetime, approved_at: datetime, rules: PushRules) -> datetime:
    """P6: 24 hours after submission at the earliest; at approval when that is later."""
    return max(review_window_end(submitted_at, rules), approved_at)


def returns_quota(decision: str, rules: PushRules) -> bool:
    """P6 (config): whether a rejected or cancelled push gives its quota back."""
    return rules.return_quota_on_reject if decision == "reject" else rules.return_quota_on_cancel


def not_pending(push_id: str, state: PushState) -> Failure:
    """P6: a review decision is taken once, on a push waiting for review."""
    reason = "PUSH_ALREADY_REVIEWED" if state is not PushState.CANCELLED else "PUSH_CANCELLED"
    return Failure(
        "P6",
        reason,
        f"push {push_id} is {state.value.replace('_', ' ')}; only a push pending review can be reviewed",
        {"push_id": push_id, "state": state.value},
    )


def not_cancellable(push_id: str, state: PushState) -> Failure:
    return Failure(
        "P6",
        "PUSH_NOT_CANCELLABLE",
        f"push {push_id} is {state.value.replace('_', ' ')}; only a push not yet sent can be cancelled",
        {"push_id": push_id, "state": state.value},
    )


# --- P4 notices and the X3 ledger -------------------------------------------------------


def earned_tiers(
    facts: AccountFacts, quota: QuotaState, now: datetime, rules: PushRules, market: MarketCalendar
) -> list[PushKind]:
    """P4: recall tiers whose conditions the account meets and whose chance this year is unspent."""
    return [
        kind
        for kind in RECALL_KINDS
        if not tier_conditions(kind, facts, rules) and not recall_quota(kind, quota.recall_used, now, rules, market)
    ]


def notice_text(kind: PushKind, year: int, rules: PushRules) -> str:
    return (
        f"Recall push chance earned: tier {kind.tier} for {year}, reaching up to "
        f"{tier_audience(kind, rules):,} old customers who are not fans (P2, P4)"
    )


@dataclass(frozen=True)
class LedgerEntry:
    """One kind of push in the quota ledger (X3)."""

    kind: PushKind
    remaining: int
    unmet: tuple[Failure, ...]
    next_possible_at: datetime | None
    audience_size: int = 0

    @property
    def available_now(self) -> bool:
        return not self.unmet


def ledger(
    facts: AccountFacts, quota: QuotaState, now: datetime, rules: PushRules, market: MarketCalendar
) -> list[LedgerEntry]:
    """X3: for each kind, what is left, when it is next possible, and every unmet condition."""
    entries: list[LedgerEntry] = []
    interval = p1_interval(quota.last_subscription_at, now, rules)
    entries.append(
        LedgerEntry(
            PushKind.SUBSCRIPTION,
            remaining=0 if interval else 1,
            unmet=tuple(p1_conditions(facts, rules) + interval),
            next_possible_at=p1_next_possible(quota.last_subscription_at, rules) if interval else None,
        )
    )
    for kind in RECALL_KINDS:
        spent = recall_quota(kind, quota.recall_used, now, rules, market)
        entries.append(
            LedgerEntry(
                kind,
                remaining=0 if spent else 1,
                unmet=tuple(tier_conditions(kind, facts, rules) + spent),
                next_possible_at=next_year_start(now, market) if spent else None,
                audience_size=tier_audience(kind, rules),
            )
        )
    grants = quota.unused_grants
    entries.append(
        LedgerEntry(
            PushKind.MASS_SEND,
            remaining=len(grants),
            unmet=() if grants else (p5_grant("(none)", None)[0],),
            next_possible_at=None,
            audience_size=max((g.audience_size for g in grants), default=0),
        )
    )
    return entries
