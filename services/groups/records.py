"""The groups service's records: what its units of work hand on, and how rows become them.

Plain frozen dataclasses, so the servicers, the join path (Core rows) and
the lifecycle jobs (ORM rows) hand on the same values, and the conversions to
protos (``convert``) never see a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

from services.common.errors import Failure, RuleRefusal, ServiceError
from services.groups import rules as domain
from services.groups.models import GroupSet, Membership, Removal
from services.groups.rules import FanLevel, GroupKind, RemovalCause, Threshold, ThresholdKind


@dataclass(frozen=True)
class SubGroupRecord:
    id: str
    seq: int
    name: str
    member_count: int


@dataclass(frozen=True)
class GroupSetRecord:
    id: str
    kind: GroupKind
    name: str
    owner_account_id: str
    store_id: str
    streamer_id: str
    threshold: Threshold
    password_digest: str
    threshold_version: int
    is_public: bool
    announcement: str
    newcomer_reply: str
    member_count: int
    created_at: datetime
    sub_groups: tuple[SubGroupRecord, ...]
    admin_ids: tuple[str, ...]


@dataclass(frozen=True)
class MembershipRecord:
    group_set_id: str
    sub_group_id: str
    sub_group_name: str
    consumer_id: str
    joined_at: datetime
    notified_at: datetime | None = None


@dataclass(frozen=True)
class RemovalRecord:
    """A member removed by someone else, as the member and the remover read it (R5, C15)."""

    group_set_id: str
    group_set_name: str
    store_id: str
    consumer_id: str
    cause: RemovalCause
    reason: str
    barred: bool
    actor_id: str
    removed_at: datetime


@dataclass(frozen=True)
class NewGroupSet:
    """A validated CreateGroupSet request."""

    kind: GroupKind
    name: str
    owner_account_id: str
    store_id: str
    streamer_id: str
    threshold: Threshold
    password_digest: str
    admin_ids: tuple[str, ...]
    is_public: bool
    announcement: str
    newcomer_reply: str
    request_id: str


@dataclass(frozen=True)
class CreateResult:
    group_set: GroupSetRecord
    created: bool


@dataclass(frozen=True)
class JoinResult:
    kind: GroupKind
    membership: MembershipRecord
    newcomer_reply: str
    new_sub_group: bool
    replayed: bool
    # The consumer was a member already: this is their membership, nothing changed.
    already_member: bool = False


@dataclass(frozen=True)
class JoinRefusal:
    """A refused join, returned (not raised) so the caller can count it by kind and rule."""

    kind: GroupKind
    rule_ids: tuple[str, ...]
    error: ServiceError


@dataclass(frozen=True)
class SettingsChange:
    """UpdateSettings fields that were present; None means "leave as is"."""

    name: str | None = None
    announcement: str | None = None
    newcomer_reply: str | None = None
    is_public: bool | None = None
    threshold: Threshold | None = None
    password_digest: str = ""


def describe_threshold(threshold: Threshold) -> str:
    """A threshold as the audit trail shows it (never a password)."""
    if threshold.kind is ThresholdKind.SPEND:
        return f"spend>={threshold.min_spend_fen}fen"
    if threshold.kind is ThresholdKind.CROWD:
        return f"crowd:{threshold.crowd_id}"
    if threshold.kind is ThresholdKind.FAN_LEVEL and threshold.min_fan_level is not None:
        return f"fan_level>={threshold.min_fan_level}"
    return str(threshold.kind)


def month_of(now: datetime) -> str:
    return f"{now.year:04d}-{now.month:02d}"


def threshold_params(threshold: Threshold) -> dict[str, Any]:
    if threshold.kind is ThresholdKind.SPEND:
        return {"min_spend_fen": threshold.min_spend_fen}
    if threshold.kind is ThresholdKind.CROWD:
        return {"crowd_id": threshold.crowd_id}
    if threshold.kind is ThresholdKind.FAN_LEVEL and threshold.min_fan_level is not None:
        return {"min_fan_level": str(threshold.min_fan_level)}
    return {}


def threshold_from_row(kind: str, params: dict[str, Any]) -> Threshold:
    level = params.get("min_fan_level")
    return Threshold(
        ThresholdKind(kind),
        min_spend_fen=int(params.get("min_spend_fen", 0)),
        crowd_id=str(params.get("crowd_id", "")),
        min_fan_level=FanLevel(level) if level else None,
    )


def group_set_record(row: Any, sub_groups: Sequence[SubGroupRecord], admin_ids: Sequence[str]) -> GroupSetRecord:
    """A group-set as the service hands it on, from its row (an ORM object or a Core row alike)."""
    return GroupSetRecord(
        id=row.id,
        kind=GroupKind(row.kind),
        name=row.name,
        owner_account_id=row.owner_account_id,
        store_id=row.store_id or "",
        streamer_id=row.streamer_id or "",
        threshold=threshold_from_row(row.threshold_kind, row.threshold_params),
        password_digest=row.password_digest,
        threshold_version=row.threshold_version,
        is_public=row.is_public,
        announcement=row.announcement,
        newcomer_reply=row.newcomer_reply,
        member_count=row.member_count,
        created_at=row.created_at,
        sub_groups=tuple(sub_groups),
        admin_ids=tuple(admin_ids),
    )


def set_fill(record: GroupSetRecord) -> domain.SetFill:
    """A group-set's counts as the capacity rules read them."""
    return domain.SetFill(
        record.kind, record.member_count, tuple(domain.SubGroupFill(s.seq, s.member_count) for s in record.sub_groups)
    )


def membership_record(m: Membership, sub_group_name: str) -> MembershipRecord:
    return MembershipRecord(m.group_set_id, m.sub_group_id, sub_group_name, m.consumer_id, m.joined_at, m.notified_at)


def removal_record(removal: Removal, group_set: GroupSet) -> RemovalRecord:
    return RemovalRecord(
        group_set_id=group_set.id,
        group_set_name=group_set.name,
        store_id=group_set.store_id or "",
        consumer_id=removal.consumer_id,
        cause=RemovalCause(removal.cause),
        reason=removal.reason,
        barred=removal.barred,
        actor_id=removal.actor,
        removed_at=removal.removed_at,
    )


def join_refusal(kind: GroupKind, failures: list[Failure], code: grpc.StatusCode) -> JoinRefusal:
    return JoinRefusal(kind, tuple(f.rule_id for f in failures), RuleRefusal(failures, code=code))
