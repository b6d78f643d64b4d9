"""Owner and super-admin checks compare the role and store along with the account id.

Regression: the gateway compared account ids only, so a consumer, streamer, ops
or upstream token (or another store's account) whose subject equalled the
owner's or an admin's id could edit settings, ask what-if, and run activities.
"""

from __future__ import annotations

import pytest

from gateway.access import caller_is_staff, is_owner, is_staff, require_store_scope
from gateway.auth import Principal, Role, principal_var
from qun.common.v1 import groups_pb2 as common_pb2
from qun.groups.v1 import groups_pb2
from services.common.errors import PermissionDenied

STORE_SET = groups_pb2.GroupSet(
    kind=common_pb2.GROUP_KIND_STORE, store_id="s1", owner_account_id="m1", admin_ids=["a1", "st1"]
)
LIVE_SET = groups_pb2.GroupSet(kind=common_pb2.GROUP_KIND_LIVE, store_id="s1", owner_account_id="m1", admin_ids=["st1"])


def test_the_owner_is_the_main_account_of_the_sets_store() -> None:
    assert is_owner(Principal("m1", Role.STORE_MAIN, "s1"), STORE_SET)
    assert not is_owner(Principal("m1", Role.STORE_MAIN, "s2"), STORE_SET)
    for role in (Role.CONSUMER, Role.STREAMER, Role.OPS, Role.UPSTREAM):
        assert not is_owner(Principal("m1", role), STORE_SET)


@pytest.mark.parametrize(
    ("principal", "group_set", "expected"),
    [
        (Principal("a1", Role.STORE_SUB, "s1"), STORE_SET, True),
        (Principal("a1", Role.STORE_SUB, "s2"), STORE_SET, False),
        (Principal("a1", Role.CONSUMER), STORE_SET, False),
        (Principal("a1", Role.OPS), STORE_SET, False),
        (Principal("st1", Role.STREAMER), LIVE_SET, True),  # E4: the streamer runs its live group
        (Principal("st1", Role.STREAMER), STORE_SET, False),
        (Principal("b1", Role.STORE_SUB, "s1"), STORE_SET, False),
    ],
)
def test_super_admins_hold_a_role_that_can_be_one(
    principal: Principal, group_set: groups_pb2.GroupSet, expected: bool
) -> None:
    assert is_staff(principal, group_set) is expected


def test_staff_fields_show_to_the_callers_own_role_and_store_only() -> None:
    for principal, expected in (
        (Principal("m1", Role.CONSUMER), False),
        (Principal("m1", Role.STORE_MAIN, "s1"), True),
        (Principal("a1", Role.STORE_SUB, "s1"), True),
        (Principal("a1", Role.STORE_SUB, "s2"), False),
    ):
        token = principal_var.set(principal)
        try:
            assert caller_is_staff(STORE_SET) is expected
        finally:
            principal_var.reset(token)
    assert not caller_is_staff(STORE_SET)  # nobody calling


def test_store_scope_is_the_tokens_own_store_and_ops_anywhere() -> None:
    require_store_scope(Principal("m1", Role.STORE_MAIN, "s1"), "s1", Role.STORE_MAIN)
    require_store_scope(Principal("o", Role.OPS), "s9", Role.STORE_MAIN)
    require_store_scope(Principal("u", Role.UPSTREAM), "s9", Role.STORE_MAIN, anywhere=(Role.UPSTREAM,))
    for principal in (
        Principal("m1", Role.STORE_MAIN, "s2"),
        Principal("u", Role.UPSTREAM),
        Principal("c", Role.CONSUMER),
    ):
        with pytest.raises(PermissionDenied):
            require_store_scope(principal, "s1", Role.STORE_MAIN)
