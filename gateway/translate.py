"""Backend messages → public API messages.

The public API is its own contract: internal fields (password digests,
threshold versions) never leave the gateway, and the newcomer auto-reply is
shown only to the set's staff.
"""

from __future__ import annotations

from qun.gateway.v1 import gateway_pb2
from qun.groups.v1 import groups_pb2


def sub_group(msg: groups_pb2.SubGroup) -> gateway_pb2.SubGroup:
    return gateway_pb2.SubGroup(
        sub_group_id=msg.sub_group_id,
        seq=msg.seq,
        name=msg.name,
        member_count=msg.member_count,
        capacity=msg.capacity,
    )


def group_set(msg: groups_pb2.GroupSet, *, show_staff_fields: bool) -> gateway_pb2.GroupSet:
    out = gateway_pb2.GroupSet(
        group_set_id=msg.group_set_id,
        kind=msg.kind,
        name=msg.name,
        owner_account_id=msg.owner_account_id,
        store_id=msg.store_id,
        streamer_id=msg.streamer_id,
        is_public=msg.is_public,
        announcement=msg.announcement,
        member_count=msg.member_count,
        capacity=msg.capacity,
        sub_groups=[sub_group(s) for s in msg.sub_groups],
        admin_ids=list(msg.admin_ids),
    )
    out.threshold.CopyFrom(msg.threshold)
    if out.threshold.HasField("password"):
        out.threshold.password.password = ""
    if msg.HasField("created_at"):
        out.created_at.CopyFrom(msg.created_at)
    if show_staff_fields:
        out.newcomer_reply = msg.newcomer_reply
    return out


def membership(msg: groups_pb2.Membership) -> gateway_pb2.Membership:
    out = gateway_pb2.Membership(
        group_set_id=msg.group_set_id, sub_group_id=msg.sub_group_id, sub_group_name=msg.sub_group_name
    )
    if msg.HasField("joined_at"):
        out.joined_at.CopyFrom(msg.joined_at)
    if msg.HasField("notified_at"):
        out.notified_at.CopyFrom(msg.notified_at)
        out.removal_after.CopyFrom(msg.removal_after)
    return out


def removal(msg: groups_pb2.Removal) -> gateway_pb2.Removal:
    """A removal as the member reads it: the group, the cause, the reason; not the remover's account (R5)."""
    out = gateway_pb2.Removal(
        group_set_id=msg.group_set_id,
        group_set_name=msg.group_set_name,
        store_id=msg.store_id,
        cause=msg.cause,
        reason=msg.reason,
        barred=msg.barred,
    )
    if msg.HasField("removed_at"):
        out.removed_at.CopyFrom(msg.removed_at)
    return out
