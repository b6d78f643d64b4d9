"""Groups over time as plain functions: monthly averages, levels, expansion, sleeping members.

No database and no gRPC here: the jobs and RPCs read the figures, call these,
and persist what they decide. Every number comes from the rules file.
"""

from __future__ import annotations

import calendar
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.common.calendar import MarketCalendar
from services.common.errors import Failure
from services.common.percent import percent_of_bp
from services.common.rules import GROUP_LEVELS, Rules
from services.groups.rules import store_member_capacity as domain_capacity

MAX_BASIS_POINTS = 10_000


def month_key(when: datetime, market: MarketCalendar) -> str:
    """T8: the marketplace month an instant falls in (D1)."""
    return market.month_key(when)


def day_key(when: datetime, market: MarketCalendar) -> str:
    """T7: the marketplace day an instant falls on (D1)."""
    return market.day_key(when)


def days_in_month(month: str) -> int:
    year, number = (int(part) for part in month.split("-"))
    return calendar.monthrange(year, number)[1]


def shift_month(month: str, delta: int) -> str:
    year, number = (int(part) for part in month.split("-"))
    index = year * 12 + (number - 1) + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def days_of(month: str) -> list[str]:
    return [f"{month}-{day:02d}" for day in range(1, days_in_month(month) + 1)]


def monthly_average(daily_counts: Mapping[str, int], month: str) -> float:
    """T7: the sum of each day's member count ÷ the days in the month (a day not counted is 0)."""
    return sum(daily_counts.get(day, 0) for day in days_of(month)) / days_in_month(month)


@dataclass(frozen=True)
class MonthFigures:
    """One store's group performance in a month (T8)."""

    avg_members: float
    open_rate_bp: int
    revisit_7d_bp: int
    conversion_bp: int
    merchant_messages: int


class CorruptFigures(ValueError):
    """A store's stored figures are outside what any caller could have reported: its settlement fails (D3)."""


def checked_figures(rules: Rules, figures: MonthFigures) -> MonthFigures:
    """The figures as they are, or ``CorruptFigures`` when a stored value is out of its bounds (D2).

    Reports are validated on the way in; a value out of range got into the
    database some other way, so the job refuses to grade the store on it
    (that store's settlement fails and is retried; the others go on, D3).
    """
    problems = [
        f"{name} {value}"
        for name, value in (
            ("open_rate_bp", figures.open_rate_bp),
            ("revisit_7d_bp", figures.revisit_7d_bp),
            ("conversion_bp", figures.conversion_bp),
        )
        if not 0 <= value <= MAX_BASIS_POINTS
    ]
    if not 0 <= figures.merchant_messages <= rules.bounds.monthly_messages:
        problems.append(f"merchant_messages {figures.merchant_messages}")
    if figures.avg_members < 0:
        problems.append(f"avg_members {figures.avg_members}")
    if problems:
        raise CorruptFigures("figures out of bounds: " + ", ".join(problems))
    return figures


def checked_count(store_id: str, members: int) -> int:
    """A store's member count to record for a day (T7); a negative one is corrupt and is not recorded."""
    if members < 0:
        raise CorruptFigures(f"store {store_id} has a negative member count ({members})")
    return members


def level_for(rules: Rules, figures: MonthFigures) -> int:
    """T8: the highest level whose every bar the month's figures reach (L0 always)."""
    bars = rules.group_levels
    level = 0
    for candidate in range(1, GROUP_LEVELS):
        if (
            figures.avg_members >= bars.min_avg_members[candidate]
            and figures.open_rate_bp >= bars.min_open_rate_bp[candidate]
            and figures.revisit_7d_bp >= bars.min_revisit_7d_bp[candidate]
            and figures.conversion_bp >= bars.min_conversion_bp[candidate]
            and figures.merchant_messages >= bars.min_merchant_messages[candidate]
        ):
            level = candidate
    return level


@dataclass(frozen=True)
class ExpansionFacts:
    """What a large-group expansion application is judged on (T3)."""

    month: str  # the current month
    levels_by_month: Mapping[str, int]  # the level in force in each earlier month
    level_now: int
    members: int
    extra_members: int


def utilisation_bp(rules: Rules, members: int, level: int) -> int:
    """T3: members ÷ (group-sets allowed at the level × a group-set's capacity), in basis points."""
    store = rules.store_groups
    denominator = store.group_sets_allowed(level) * store.group_set_capacity
    return (members * 10_000) // denominator if denominator else 0


def capacity(rules: Rules, level: int, extra_members: int) -> int:
    """T2 + T3: the level's members plus what expansions granted, never past T3's cap by expansions."""
    return domain_capacity(rules, level, extra_members)


def expansion_grant(rules: Rules, level: int, extra_members: int) -> int:
    """T3: what one granted application adds: 50,000, or what is left under the 500,000 cap.

    The last application is granted in part (475,000 → 500,000 adds 25,000)
    rather than refused, since the rule caps the capacity, not the number of
    applications; at the cap nothing is left and the application is refused.
    """
    left = rules.expansion.max_members - capacity(rules, level, extra_members)
    return max(0, min(rules.expansion.grant_members, left))


def expansion_failures(rules: Rules, facts: ExpansionFacts) -> list[Failure]:
    """T3: L3+ in each of the last N calendar months, utilisation ≥ 85%, and room left under 500,000.

    Utilisation is floored to whole basis points and shown with two decimals,
    so the comparison reads true ("84.99% < 85.00%").
    """
    expansion = rules.expansion
    failures: list[Failure] = []
    months = [shift_month(facts.month, -back) for back in range(expansion.consecutive_months, 0, -1)]
    levels = [facts.levels_by_month.get(m, 0) for m in months]
    if any(level < expansion.min_level for level in levels):
        history = ", ".join(f"{m}: L{level}" for m, level in zip(months, levels, strict=True))
        failures.append(
            Failure(
                "T3",
                "LEVEL_TOO_LOW_FOR_EXPANSION",
                f"needs L{expansion.min_level}+ in each of the last {expansion.consecutive_months} months ({history})",
                {"levels": history, "required_level": str(expansion.min_level)},
            )
        )
    used = utilisation_bp(rules, facts.members, facts.level_now)
    if used < expansion.min_utilisation_bp:
        allowed = rules.store_groups.group_sets_allowed(facts.level_now)
        failures.append(
            Failure(
                "T3",
                "UTILISATION_TOO_LOW",
                f"utilisation {facts.members} ÷ ({allowed} × {rules.store_groups.group_set_capacity}) = "
                f"{percent_of_bp(used)} < {percent_of_bp(expansion.min_utilisation_bp)}",
                {
                    "members": str(facts.members),
                    "utilisation_bp": str(used),
                    "required_bp": str(expansion.min_utilisation_bp),
                },
            )
        )
    now = capacity(rules, facts.level_now, facts.extra_members)
    if expansion_grant(rules, facts.level_now, facts.extra_members) == 0:
        failures.append(
            Failure(
                "T3",
                "EXPANSION_LIMIT_REACHED",
                f"capacity is {now}, at most {expansion.max_members}: nothing left to grant",
                {"capacity": str(now), "max": str(expansion.max_members)},
            )
        )
    return failures


class SleepingAction(enum.StrEnum):
    KEEP = "keep"
    NOTIFY = "notify"
    REMOVE = "remove"


def sleeping_action(
    rules: Rules,
    *,
    last_active_at: datetime,
    notified_at: datetime | None,
    inactivity_days: int,
    now: datetime,
) -> SleepingAction:
    """C15 with X5's notice: inactive past the window → notice; still inactive a notice period later → removed.

    Activity after the notice clears it (the caller resets ``notified_at``), so a
    marked member stays by becoming active.
    """
    if now - last_active_at < timedelta(days=inactivity_days):
        return SleepingAction.KEEP
    if notified_at is None:
        return SleepingAction.NOTIFY
    if now - notified_at >= timedelta(days=rules.sleeping.notice_days):
        return SleepingAction.REMOVE
    return SleepingAction.KEEP


def recent_months(month: str, count: int) -> Sequence[str]:
    return [shift_month(month, -back) for back in range(count, 0, -1)]
