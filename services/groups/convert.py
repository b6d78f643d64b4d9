"""Between the wire and the domain: proto messages to plain values and back.

Kept apart from the servicer so the rules and the repository never see a
proto, and so the one place that knows a password is write-only (SPEC C9:
reads return it blank, only the digest travels) is easy to find.
"""

from __future__ import annotations

from datetime import timedelta

from qun.common.v1 import groups_pb2 as common_groups_pb2
from qun.groups.v1 import groups_pb2
from services.common.messages import message_from
from services.common.rules import Rules
from services.common.validation import Fields
from services.groups import rules as domain
from services.groups.records import GroupSetRecord, MembershipRecord, RemovalRecord
from services.groups.rules import FanLevel, GroupKind, RemovalCause, Threshold, ThresholdKind

MAX_PASSWORD_CHARS = 32

KIND_FROM_PROTO: dict[int, GroupKind] = {
    common_groups_pb2.GROUP_KIND_STORE: GroupKind.STORE,
    common_groups_pb2.GROUP_KIND_LIVE: GroupKind.LIVE,
}
KIND_TO_PROTO: dict[GroupKind, common_groups_pb2.GroupKind.ValueType] = {
    GroupKind.STORE: common_groups_pb2.GROUP_KIND_STORE,
    GroupKind.LIVE: common_groups_pb2.GROUP_KIND_LIVE,
}
FAN_LEVEL_FROM_PROTO: dict[common_groups_pb2.FanLevel.ValueType, FanLevel] = {
    common_groups_pb2.FAN_LEVEL_IRON: FanLevel.IRON,
    common_groups_pb2.FAN_LEVEL_DIAMOND: FanLevel.DIAMOND,
    common_groups_pb2.FAN_LEVEL_BELOVED: FanLevel.BELOVED,
}
FAN_LEVEL_TO_PROTO = {level: value for value, level in FAN_LEVEL_FROM_PROTO.items()}
CAUSE_FROM_PROTO: dict[common_groups_pb2.RemovalCause.ValueType, RemovalCause] = {
    common_groups_pb2.REMOVAL_CAUSE_OWNER: RemovalCause.OWNER,
    common_groups_pb2.REMOVAL_CAUSE_ADMIN: RemovalCause.ADMIN,
    common_groups_pb2.REMOVAL_CAUSE_STORE_BLACKLIST: RemovalCause.STORE_BLACKLIST,
    common_groups_pb2.REMOVAL_CAUSE_SLEEPING: RemovalCause.SLEEPING,
}
CAUSE_TO_PROTO = {cause: value for value, cause in CAUSE_FROM_PROTO.items()}


def threshold_from_proto(
    fields: Fields, msg: common_groups_pb2.Threshold, kind: GroupKind | None, *, present: bool = True
) -> tuple[Threshold | None, str]:
    """A validated threshold and its password (C9, C10); violations go to ``fields``."""
    rule = msg.WhichOneof("rule") if present else None
    if rule is None:
        fields.fail("threshold", "required: one of follow, spend, password, crowd, fan_level")
        return None, ""
    threshold_kind = ThresholdKind(rule)
    if kind is not None:
        for failure in domain.threshold_kind_failures(kind, threshold_kind):
            fields.fail("threshold", failure.message)
    password = ""
    threshold = Threshold(threshold_kind)
    if threshold_kind is ThresholdKind.SPEND:
        amount = fields.positive("threshold.spend.min_spend_fen", msg.spend.min_spend_fen)
        threshold = Threshold(threshold_kind, min_spend_fen=amount)
    elif threshold_kind is ThresholdKind.PASSWORD:
        password = fields.text(
            "threshold.password.password", msg.password.password, max_chars=MAX_PASSWORD_CHARS, required=True
        )
    elif threshold_kind is ThresholdKind.CROWD:
        crowd = fields.identifier("threshold.crowd.crowd_id", msg.crowd.crowd_id)
        threshold = Threshold(threshold_kind, crowd_id=crowd)
    elif threshold_kind is ThresholdKind.FAN_LEVEL:
        value = fields.enum(
            "threshold.fan_level.min_level",
            msg.fan_level.min_level,
            common_groups_pb2.FanLevel,
            allowed=tuple(FAN_LEVEL_FROM_PROTO),
        )
        threshold = Threshold(threshold_kind, min_fan_level=FAN_LEVEL_FROM_PROTO.get(value))
    return threshold, password


def threshold_to_proto(threshold: Threshold) -> common_groups_pb2.Threshold:
    """The threshold as read: a password threshold comes back with its password blank."""
    msg = common_groups_pb2.Threshold()
    if threshold.kind is ThresholdKind.FOLLOW:
        msg.follow.SetInParent()
    elif threshold.kind is ThresholdKind.SPEND:
        msg.spend.min_spend_fen = threshold.min_spend_fen
    elif threshold.kind is ThresholdKind.PASSWORD:
        msg.password.SetInParent()
    elif threshold.kind is ThresholdKind.CROWD:
        msg.crowd.crowd_id = threshold.crowd_id
    elif threshold.kind is ThresholdKind.FAN_LEVEL and threshold.min_fan_level is not None:
        msg.fan_level.min_level = FAN_LEVEL_TO_PROTO[threshold.min_fan_level]
    return msg


def group_set_to_proto(record: GroupSetRecord, rules: Rules) -> groups_pb2.GroupSet:
    limits = domain.set_limits(rules, record.kind)
    return message_from(
        groups_pb2.GroupSet,
        record,
        group_set_id=record.id,
        kind=KIND_TO_PROTO[record.kind],
        threshold=threshold_to_proto(record.threshold),
        capacity=limits.group_set_capacity,
        sub_groups=[
            message_from(groups_pb2.SubGroup, s, sub_group_id=s.id, capacity=limits.sub_group_capacity)
            for s in record.sub_groups
        ],
        admin_ids=list(record.admin_ids),
    )


def membership_to_proto(record: MembershipRecord, notice_days: int = 0) -> groups_pb2.Membership:
    notified = record.notified_at
    removal_after = notified + timedelta(days=notice_days) if notified is not None else None
    return message_from(groups_pb2.Membership, record, removal_after=removal_after)


def removal_to_proto(record: RemovalRecord) -> groups_pb2.Removal:
    return message_from(groups_pb2.Removal, record, cause=CAUSE_TO_PROTO[record.cause])
