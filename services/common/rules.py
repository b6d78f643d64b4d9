"""The numbers of SPEC, loaded from one rules file and overridable by ops.

``config/rules.toml`` holds the defaults; ``QUN_RULES_FILE`` names a file whose
values override them key by key. Unknown keys and wrong types stop the process
at start, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from services.common.calendar import MarketCalendar
from services.common.validation import MAX_INT64

DEFAULT_RULES_FILE = Path(__file__).resolve().parents[2] / "config" / "rules.toml"
GROUP_LEVELS = 5  # L0..L4 (SPEC E5, T8)


class RulesError(ValueError):
    """The rules file is malformed; the process must not start."""


@dataclass(frozen=True)
class CalendarRules:
    """D1: the one time zone every day, month and year of SPEC is counted in."""

    utc_offset_hours: int

    @property
    def market(self) -> MarketCalendar:
        return MarketCalendar(self.utc_offset_hours)


@dataclass(frozen=True)
class BoundsRules:
    """D2: the largest value a caller may send for each kind of number.

    ``_check`` proves at load time that the totals the services compute from
    values within these bounds fit a signed 64-bit integer (``OVERFLOW_GUARDS``).
    """

    money_fen: int
    prize_fen: int
    quantity: int
    stock: int
    skus_per_item: int
    pool_prizes: int
    pools_per_activity: int
    vote_options: int
    group_buy_size: int
    order_entries: int
    facts_per_batch: int
    audience: int
    taoqi_score: int
    content_level: int
    monthly_messages: int
    inactivity_days: int
    video_seconds: int
    delivery_chunk: int


# D2: every product or sum of bounded values a service computes, with where it is computed; each must
# fit a signed 64-bit integer. Totals over an unbounded number of rows (a sale's revenue over every
# restock, a store's refunds over the years) are not here: they are summed exactly and reported
# saturated at the largest int64 (``services.common.bounds.saturated``).
OVERFLOW_GUARDS: tuple[tuple[str, Callable[[BoundsRules], int]], ...] = (
    ("an order's subtotal: price × quantity", lambda b: b.money_fen * b.quantity),
    ("an order's discounts: every listed packet, coupon and red packet", lambda b: b.prize_fen * b.order_entries * 3),
    ("an item's stock after a restock", lambda b: b.stock + b.quantity),
    ("a pool's value: prize × prizes", lambda b: b.prize_fen * b.pool_prizes),
    ("an activity's pools together", lambda b: b.prize_fen * b.pool_prizes * b.pools_per_activity),
    ("a vote's tally over every member of a store", lambda b: b.audience * b.vote_options),
)


@dataclass(frozen=True)
class CreateRules:
    min_paid_orders: int
    paid_orders_window_days: int
    min_content_level: int
    content_level_delay_days: int


@dataclass(frozen=True)
class JoinRules:
    min_taoqi_score: int
    merchant_blacklists_to_platform: int
    blacklisted_invitees_to_platform: int
    spend_window_days: int


@dataclass(frozen=True)
class StoreGroupRules:
    sub_group_capacity: int
    group_set_capacity: int
    sub_groups_per_set: int
    group_sets_by_level: tuple[int, ...]
    members_by_level: tuple[int, ...]

    def group_sets_allowed(self, level: int) -> int:
        return self.group_sets_by_level[level]

    def members_allowed(self, level: int) -> int:
        return self.members_by_level[level]


@dataclass(frozen=True)
class LiveGroupRules:
    sub_group_capacity: int
    group_set_capacity: int
    sub_groups_per_set: int
    group_sets_per_streamer: int
    members_per_streamer: int


@dataclass(frozen=True)
class RoleRules:
    max_super_admins: int
    max_video_seconds: int


@dataclass(frozen=True)
class GroupLevelRules:
    """T8 bars, one value per level L0..L4."""

    min_avg_members: tuple[int, ...]
    min_open_rate_bp: tuple[int, ...]
    min_revisit_7d_bp: tuple[int, ...]
    min_conversion_bp: tuple[int, ...]
    min_merchant_messages: tuple[int, ...]


@dataclass(frozen=True)
class ExpansionRules:
    min_level: int
    consecutive_months: int
    min_utilisation_bp: int
    grant_members: int
    max_members: int


@dataclass(frozen=True)
class SleepingRules:
    default_inactivity_days: int
    notice_days: int


@dataclass(frozen=True)
class PushRules:
    """P1–P6: the content account's push quotas (SPEC §7)."""

    subscription_min_subscribers: int  # P1
    subscription_interval_days: int  # P1
    recall_per_year: int  # P2
    tier1_min_old_customer_fans: int  # P2 tier 1
    tier1_min_broadcasts: int  # P2 tier 1
    broadcast_window_days: int  # P2 tier 1
    tier1_audience: int  # P2 tier 1
    tier2_min_old_customer_fans: int  # P2 tier 2
    tier2_min_revisit_rate_bp: int  # P2 tier 2
    tier2_audience: int  # P2 tier 2
    old_customer_min_days: int  # P3
    old_customer_window_months: int  # P3
    review_delay_hours: int  # P6
    return_quota_on_reject: bool  # P6
    return_quota_on_cancel: bool  # P6


@dataclass(frozen=True)
class CampaignRules:
    """M8, M10, M11, M12: the numbers of the marketing tools inside groups."""

    max_active_activities: int
    max_cash_red_packets_per_order: int
    max_store_coupons_per_order: int
    wallet_size: int
    trumpet_min_level: int
    trumpet_min_delay_seconds: int


@dataclass(frozen=True)
class AbuseRules:
    """Per-principal rate limits at the gateway: a token bucket per caller and gateway replica.

    ``<role>_rate`` calls a second refill the bucket, ``<role>_burst`` is its size.
    """

    enabled: bool
    store_main_rate: int
    store_main_burst: int
    store_sub_rate: int
    store_sub_burst: int
    streamer_rate: int
    streamer_burst: int
    consumer_rate: int
    consumer_burst: int
    ops_rate: int
    ops_burst: int
    upstream_rate: int
    upstream_burst: int

    def limit(self, role: str) -> tuple[int, int]:
        """(rate per second, burst) for a role's value, e.g. ``"consumer"``."""
        return getattr(self, f"{role}_rate"), getattr(self, f"{role}_burst")


@dataclass(frozen=True)
class Rules:
    calendar: CalendarRules
    bounds: BoundsRules
    create: CreateRules
    join: JoinRules
    store_groups: StoreGroupRules
    live_groups: LiveGroupRules
    roles: RoleRules
    group_levels: GroupLevelRules
    expansion: ExpansionRules
    sleeping: SleepingRules
    push: PushRules
    campaigns: CampaignRules
    abuse: AbuseRules

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if key not in base:
            raise RulesError(f"unknown rule {where}{key}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise RulesError(f"rule {where}{key} must be a table")
            merged[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        name = f"{where}{field.name}"
        if field.name not in data:
            raise RulesError(f"missing rule {name}")
        hint = hints[field.name]
        raw = data[field.name]
        if dataclasses.is_dataclass(hint):
            values[field.name] = _build(hint, raw, f"{name}.")  # type: ignore[arg-type]  # a dataclass type, not an instance
        elif get_origin(hint) is tuple:
            if not isinstance(raw, list) or not all(_is_int(v) for v in raw):
                raise RulesError(f"rule {name} must be a list of integers")
            values[field.name] = tuple(raw)
        elif hint is bool:
            if not isinstance(raw, bool):
                raise RulesError(f"rule {name} must be true or false, got {raw!r}")
            values[field.name] = raw
        elif hint is int:
            if not _is_int(raw):
                raise RulesError(f"rule {name} must be an integer, got {raw!r}")
            values[field.name] = raw
        else:  # pragma: no cover - a new field type needs a branch here
            raise RulesError(f"rule {name} has unsupported type {get_args(hint)}")
    return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(rules: Rules) -> None:
    per_level = [
        ("store_groups.group_sets_by_level", rules.store_groups.group_sets_by_level),
        ("store_groups.members_by_level", rules.store_groups.members_by_level),
        *((f"group_levels.{k}", v) for k, v in dataclasses.asdict(rules.group_levels).items()),
    ]
    for name, values in per_level:
        if len(values) != GROUP_LEVELS:
            raise RulesError(f"rule {name} needs one value per level L0..L4")
    for role in ("store_main", "store_sub", "streamer", "consumer", "ops", "upstream"):
        if min(rules.abuse.limit(role)) < 1:
            raise RulesError(f"rules abuse.{role}_rate and abuse.{role}_burst must be at least 1")
    for section_field in dataclasses.fields(rules):
        section = getattr(rules, section_field.name)
        for key, value in dataclasses.asdict(section).items():
            for v in value if isinstance(value, tuple) else (value,):
                if v < 0 and (section_field.name, key) != ("calendar", "utc_offset_hours"):
                    raise RulesError(f"rule {section_field.name}.{key} must not be negative")
    if not -12 <= rules.calendar.utc_offset_hours <= 14:
        raise RulesError("rule calendar.utc_offset_hours must be between -12 and 14")
    for key, value in dataclasses.asdict(rules.bounds).items():
        if value < 1:
            raise RulesError(f"rule bounds.{key} must be at least 1")
    for what, total in OVERFLOW_GUARDS:
        if total(rules.bounds) > MAX_INT64:
            raise RulesError(f"rules [bounds] let {what} exceed a signed 64-bit integer; lower them")


def load_rules(path: Path | None = None, env: dict[str, str] | None = None) -> Rules:
    """Defaults from ``config/rules.toml``, then the file ``QUN_RULES_FILE`` names."""
    env = env if env is not None else dict(os.environ)
    data = tomllib.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))
    override_path = path or (Path(env["QUN_RULES_FILE"]) if env.get("QUN_RULES_FILE") else None)
    if override_path is not None:
        try:
            override = tomllib.loads(override_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RulesError(f"cannot read rules file {override_path}: {exc}") from exc
        data = _merge(data, override, "")
    rules: Rules = _build(Rules, data, "")
    _check(rules)
    return rules
