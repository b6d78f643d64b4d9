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
from services.common.rules import GROUP_LEVELS, Rules


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
    return rules.store_groups.members_allowed(level) + extra_members


def expansion_failures(rules: Rules, facts: ExpansionFacts) -> list[Failure]:
    """T3: L3+ in each of the last N calendar months, utilisation ≥ 85%, and room under 500,000."""
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
                f"{used / 100:.0f}% < {expansion.min_utilisation_bp / 100:.0f}%",
                {
                    "members": str(facts.members),
                    "utilisation_bp": str(used),
                    "required_bp": str(expansion.min_utilisation_bp),
                },
            )
        )
    after = capacity(rules, facts.level_now, facts.extra_members) + expansion.grant_members
    if after > expansion.max_members:
        failures.append(
            Failure(
                "T3",
                "EXPANSION_LIMIT_REACHED",
                f"capacity would be {after}, at most {expansion.max_members}",
                {"capacity_after": str(after), "max": str(expansion.max_members)},
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
