"""The groups domain rules as plain functions over plain values.

Topology and capacity (SPEC T1, T2, T4, T5), the one-sub-group-per-set rule
(C13), the threshold kind a group kind takes (C9, C10) and the admin limit
(R2). Nothing here knows about gRPC or the database: the repository feeds in
the counts it read under its row locks, so the same functions decide both the
read-only CheckJoin and the locked AddMember, and unit tests check them alone.

Every number comes from ``services.common.rules.Rules``; a refusal is a list
of every failed rule (SPEC X1, C14) with the figures it compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.common.errors import Failure
from services.common.rules import Rules


class GroupKind(StrEnum):
    """Store groups belong to a store (T1, T2); live fan groups to a streamer (T4)."""

    STORE = "store"
    LIVE = "live"


class ThresholdKind(StrEnum):
    """The entry threshold of a group-set (C9 for store groups, C10 for live ones)."""

    FOLLOW = "follow"
    SPEND = "spend"
    PASSWORD = "password"
    CROWD = "crowd"
    FAN_LEVEL = "fan_level"


class RemovalCause(StrEnum):
    """Why a member left without leaving themselves (R5, C15); the metric's and the audit trail's label."""

    OWNER = "owner"
    ADMIN = "admin"
    STORE_BLACKLIST = "store_blacklist"
    SLEEPING = "sleeping"


class FanLevel(StrEnum):
    """The lowest fan level a live fan group admits (C10): iron, diamond or beloved."""

    IRON = "IRON"
    DIAMOND = "DIAMOND"
    BELOVED = "BELOVED"


THRESHOLDS_BY_KIND: dict[GroupKind, frozenset[ThresholdKind]] = {
    GroupKind.STORE: frozenset(
        {ThresholdKind.FOLLOW, ThresholdKind.SPEND, ThresholdKind.PASSWORD, ThresholdKind.CROWD}
    ),
    GroupKind.LIVE: frozenset({ThresholdKind.FAN_LEVEL}),
}
THRESHOLD_RULE: dict[GroupKind, str] = {GroupKind.STORE: "C9", GroupKind.LIVE: "C10"}
# The rule that sets a group-set's own caps and the rule that sets its account's caps.
SET_RULE: dict[GroupKind, str] = {GroupKind.STORE: "T1", GroupKind.LIVE: "T4"}
ACCOUNT_RULE: dict[GroupKind, str] = {GroupKind.STORE: "T2", GroupKind.LIVE: "T4"}


@dataclass(frozen=True)
class Threshold:
    """A group-set's threshold without its password (only the digest is kept)."""

    kind: ThresholdKind
    min_spend_fen: int = 0
    crowd_id: str = ""
    min_fan_level: FanLevel | None = None


@dataclass(frozen=True)
class SetLimits:
    """Caps of one group-set and its sub-groups (T1 for store groups, T4 for live ones)."""

    sub_group_capacity: int
    group_set_capacity: int
    sub_groups_per_set: int


@dataclass(frozen=True)
class AccountLimits:
    """Caps of the store or streamer that owns group-sets (T2 by level, T4)."""

    group_sets: int
    members: int


@dataclass(frozen=True)
class SubGroupFill:
    seq: int
    member_count: int


@dataclass(frozen=True)
class SetFill:
    """A group-set's counts as read (under its row lock when joining)."""

    kind: GroupKind
    member_count: int
    sub_groups: tuple[SubGroupFill, ...]


@dataclass(frozen=True)
class AccountFill:
    """The owning store's or streamer's counts; ``level`` is the store's group level (T2)."""

    kind: GroupKind
    member_count: int
    group_set_count: int
    level: int = 0
    # Members granted by large-group expansion applications (T3).
    extra_members: int = 0


@dataclass(frozen=True)
class Placement:
    """Where a join goes: an existing sub-group, or a new one with this seq (T5)."""

    seq: int
    new_sub_group: bool


def set_limits(rules: Rules, kind: GroupKind) -> SetLimits:
    section = rules.store_groups if kind is GroupKind.STORE else rules.live_groups
    return SetLimits(section.sub_group_capacity, section.group_set_capacity, section.sub_groups_per_set)


def store_member_capacity(rules: Rules, level: int, extra_members: int) -> int:
    """T2 + T3: the level's members plus what expansions granted.

    Expansions never lift a store past T3's cap (500,000): a store granted up
    to the cap at L3 that later reaches L4 stays at the cap, not above it.
    """
    base = rules.store_groups.members_allowed(level)
    if extra_members <= 0:
        return base
    return min(base + extra_members, max(base, rules.expansion.max_members))


def account_limits(rules: Rules, kind: GroupKind, level: int, extra_members: int = 0) -> AccountLimits:
    """T2: a store's caps depend on its group level, T3: plus what expansions granted
    (a group-set more per group-set capacity granted); T4: a streamer's are fixed."""
    if kind is GroupKind.STORE:
        store = rules.store_groups
        return AccountLimits(
            store.group_sets_allowed(level) + extra_members // store.group_set_capacity,
            store_member_capacity(rules, level, extra_members),
        )
    return AccountLimits(rules.live_groups.group_sets_per_streamer, rules.live_groups.members_per_streamer)


STREAMER_PREFIX = "streamer/"  # "/" is in no id (services.common.validation.ID_PATTERN)


def owner_key(kind: GroupKind, store_id: str, streamer_id: str) -> str:
    """The account whose caps a group-set counts against: its store (T2) or its streamer (T4).

    A store's key is its id, so groups' store tables (keyed by ``store_id``) are spread like its owner
    rows (ADR 0014); a streamer's is prefixed with what no id holds, so the two never meet.
    """
    return store_id if kind is GroupKind.STORE else f"{STREAMER_PREFIX}{streamer_id}"


def sub_group_name(group_set_name: str, seq: int) -> str:
    """T5: a sub-group is named after its group-set plus its sequence number."""
    return f"{group_set_name}{seq}"


def threshold_kind_failures(kind: GroupKind, threshold: ThresholdKind) -> list[Failure]:
    """C9/C10: store groups take follow/spend/password/crowd, live groups a fan level."""
    allowed = THRESHOLDS_BY_KIND[kind]
    if threshold in allowed:
        return []
    names = ", ".join(sorted(allowed))
    return [
        Failure(
            THRESHOLD_RULE[kind],
            "THRESHOLD_KIND_MISMATCH",
            f"a {kind} group-set takes a {names} threshold, not {threshold}",
            {"group_kind": str(kind), "threshold": str(threshold), "allowed": names},
        )
    ]


def create_failures(rules: Rules, account: AccountFill) -> list[Failure]:
    """T2 (store, by level) or T4 (streamer): how many active group-sets the account may have."""
    limits = account_limits(rules, account.kind, account.level, account.extra_members)
    if account.group_set_count < limits.group_sets:
        return []
    rule = ACCOUNT_RULE[account.kind]
    figures = {"group_sets": str(account.group_set_count), "cap": str(limits.group_sets)}
    text = f"{account.group_set_count} group-sets, at most {limits.group_sets}"
    if account.kind is GroupKind.STORE:
        figures["level"] = str(account.level)
        text += f" at group level L{account.level}"
    return [Failure(rule, "GROUP_SET_LIMIT_REACHED", text, figures)]


def place(rules: Rules, fill: SetFill) -> Placement | None:
    """T5: the first sub-group with room (lowest seq), else the next one, else None."""
    limits = set_limits(rules, fill.kind)
    for sub in sorted(fill.sub_groups, key=lambda s: s.seq):
        if sub.member_count < limits.sub_group_capacity:
            return Placement(sub.seq, new_sub_group=False)
    if len(fill.sub_groups) < limits.sub_groups_per_set:
        last = max((s.seq for s in fill.sub_groups), default=0)
        return Placement(last + 1, new_sub_group=True)
    return None


def capacity_failures(rules: Rules, fill: SetFill, account: AccountFill) -> list[Failure]:
    """Every cap a join would break (T1/T4 set and sub-groups, T2/T4 account), all at once."""
    failures: list[Failure] = []
    limits = set_limits(rules, fill.kind)
    set_rule = SET_RULE[fill.kind]
    if fill.member_count >= limits.group_set_capacity:
        failures.append(
            Failure(
                set_rule,
                "GROUP_SET_FULL",
                f"the group-set holds {fill.member_count} members, at most {limits.group_set_capacity}",
                {"members": str(fill.member_count), "cap": str(limits.group_set_capacity)},
            )
        )
    if place(rules, fill) is None:
        failures.append(
            Failure(
                set_rule,
                "SUB_GROUPS_FULL",
                f"all {len(fill.sub_groups)} sub-groups hold {limits.sub_group_capacity} members "
                f"and a group-set has at most {limits.sub_groups_per_set} sub-groups",
                {
                    "sub_groups": str(len(fill.sub_groups)),
                    "max_sub_groups": str(limits.sub_groups_per_set),
                    "sub_group_cap": str(limits.sub_group_capacity),
                },
            )
        )
    account_cap = account_limits(rules, account.kind, account.level, account.extra_members).members
    if account.member_count >= account_cap:
        figures = {"members": str(account.member_count), "cap": str(account_cap)}
        whose = "store" if account.kind is GroupKind.STORE else "streamer"
        text = f"the {whose}'s group-sets hold {account.member_count} members, at most {account_cap}"
        if account.kind is GroupKind.STORE:
            figures["level"] = str(account.level)
            text += f" at group level L{account.level}"
        failures.append(Failure(ACCOUNT_RULE[account.kind], "ACCOUNT_FULL", text, figures))
    return failures


def membership_failures(already_member: bool) -> list[Failure]:
    """C13: at most one sub-group of a given group-set per consumer."""
    if not already_member:
        return []
    return [Failure("C13", "ALREADY_MEMBER", "already a member of a sub-group of this group-set", {})]


def join_failures(rules: Rules, fill: SetFill, account: AccountFill, *, already_member: bool) -> list[Failure]:
    """The groups side of "may this consumer join": C13 and every capacity rule."""
    return membership_failures(already_member) + capacity_failures(rules, fill, account)


def admin_limit_failures(rules: Rules, current: int, adding: int = 1) -> list[Failure]:
    """R2: at most ``max_super_admins`` super admins per group-set."""
    cap = rules.roles.max_super_admins
    if current + adding <= cap:
        return []
    return [
        Failure(
            "R2",
            "TOO_MANY_ADMINS",
            f"a group-set has at most {cap} super admins; it has {current}, adding {adding}",
            {"admins": str(current), "adding": str(adding), "cap": str(cap)},
        )
    ]


def settings_target_failures(sub_group_of: str | None) -> list[Failure]:
    """R3: settings are edited on the group-set; ``sub_group_of`` is the set of a sub-group id given."""
    if sub_group_of is None:
        return []
    return [
        Failure(
            "R3",
            "SETTINGS_ON_GROUP_SET",
            "settings are edited on the group-set, not on one of its sub-groups",
            {"group_set_id": sub_group_of},
        )
    ]


def removal_refusal(cause: RemovalCause, *, target_is_owner: bool, target_is_admin: bool) -> str | None:
    """R5: who the owner and the super admins may remove; None when allowed.

    The owner is never removed from their own group-set (R1: the owner of every
    group is the store's main account; they may leave); a super admin removes
    members but not another admin (nor themselves: they leave). Removals by a
    store blacklist or the sleeping plan are the store's and the system's, not
    a person's, and are not limited here.
    """
    if cause not in (RemovalCause.OWNER, RemovalCause.ADMIN):
        return None
    if target_is_owner:
        return "the owner is never removed from their own group-set (R1)"
    if cause is RemovalCause.ADMIN and target_is_admin:
        return "a super admin cannot remove a super admin; only the owner can (R5)"
    return None


def describe_removal(cause: RemovalCause, reason: str, barred: bool) -> str:
    """How a removal reads in the audit trail (X4): the cause, whether barred, and the reason given."""
    text = str(cause) + (", barred from the store (C5)" if barred else "")
    return f"{text}: {reason}" if reason else text
