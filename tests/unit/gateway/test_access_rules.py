"""Access beyond a role, pinned rule by rule: live-group owners, the C2/C3 staff exemption, the main account now.

``make mutation`` runs these against ``gateway/access.py``: each test names
the rule a wrong comparison there would break.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from gateway.access import MainAccounts, StoreAccountGuard, is_owner, is_staff_account
from gateway.auth import Principal, Role, principal_var
from gateway.downstream import Relayed
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.eligibility.v1 import eligibility_pb2
from qun.groups.v1 import groups_pb2
from services.common.errors import PermissionDenied
from tests.unit.gateway.fakes import Context, backends

STORELESS_LIVE = groups_pb2.GroupSet(kind=common_pb2.GROUP_KIND_LIVE, store_id="", owner_account_id="st1")
STORE_LIVE = groups_pb2.GroupSet(kind=common_pb2.GROUP_KIND_LIVE, store_id="s1", owner_account_id="st1")
STORELESS_STORE_KIND = groups_pb2.GroupSet(kind=common_pb2.GROUP_KIND_STORE, store_id="", owner_account_id="st1")
STORE_SET = groups_pb2.GroupSet(
    kind=common_pb2.GROUP_KIND_STORE, store_id="s1", owner_account_id="m1", admin_ids=["a1"]
)


def test_r1_the_streamer_owns_a_storeless_live_group_only() -> None:
    streamer = Principal("st1", Role.STREAMER)
    assert is_owner(streamer, STORELESS_LIVE)
    assert not is_owner(streamer, STORE_LIVE)  # a store's live group is owned by the store's main account
    assert not is_owner(streamer, STORELESS_STORE_KIND)
    assert not is_owner(Principal("st2", Role.STREAMER), STORELESS_LIVE)
    for role in (Role.CONSUMER, Role.OPS, Role.UPSTREAM, Role.STORE_SUB):
        assert not is_owner(Principal("st1", role, "s1" if role is Role.STORE_SUB else ""), STORELESS_LIVE)


@pytest.mark.parametrize(("account", "exempt"), [("m1", True), ("a1", True), ("c1", False), ("", False)])
def test_c2_c3_the_owner_and_super_admins_are_exempt_by_account(account: str, exempt: bool) -> None:
    assert is_staff_account(account, STORE_SET) is exempt


class Eligibility:
    """A fake eligibility client: GetStore answers from ``main_accounts``, failing first with ``failures``."""

    def __init__(self, main_accounts: dict[str, str], failures: tuple[grpc.StatusCode, ...] = ()) -> None:
        self.main_accounts = main_accounts
        self.failures = list(failures)
        self.calls = 0

    async def GetStore(self, request: eligibility_pb2.GetStoreRequest, timeout: float) -> Any:  # noqa: N802 - a stub
        self.calls += 1
        if self.failures:
            code = self.failures.pop(0)
            raise AioRpcError(code, Metadata(), Metadata(), details=code.name.lower())
        if request.store_id not in self.main_accounts:
            raise AioRpcError(grpc.StatusCode.NOT_FOUND, Metadata(), Metadata(), details="no such store")
        return eligibility_pb2.GetStoreResponse(
            store=facts_pb2.StoreFact(store_id=request.store_id, main_account_id=self.main_accounts[request.store_id])
        )


def accounts(eligibility: Eligibility) -> MainAccounts:
    return MainAccounts(backends(eligibility=eligibility))


async def test_r1_the_store_main_token_must_name_the_main_account_now() -> None:
    checked = accounts(Eligibility({"s1": "m1"}))
    await checked.verify(Principal("m1", Role.STORE_MAIN, "s1"), Context())  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied) as refused:
        await checked.verify(Principal("m0", Role.STORE_MAIN, "s1"), Context())  # type: ignore[arg-type]
    assert refused.value.metadata["rules"] == "R1"


async def test_e1_a_store_the_platform_does_not_know_is_refused_not_failed() -> None:
    with pytest.raises(PermissionDenied) as refused:
        await accounts(Eligibility({})).verify(Principal("m1", Role.STORE_MAIN, "s9"), Context())  # type: ignore[arg-type]
    assert refused.value.metadata["rules"] == "E1"


async def test_the_main_account_read_is_retried_when_eligibility_is_briefly_unavailable() -> None:
    eligibility = Eligibility({"s1": "m1"}, failures=(grpc.StatusCode.UNAVAILABLE,))
    await accounts(eligibility).verify(Principal("m1", Role.STORE_MAIN, "s1"), Context())  # type: ignore[arg-type]
    assert eligibility.calls == 2


async def test_any_other_failure_of_the_read_is_relayed_not_taken_for_an_unknown_store() -> None:
    eligibility = Eligibility({"s1": "m1"}, failures=(grpc.StatusCode.PERMISSION_DENIED,))
    with pytest.raises(Relayed) as relayed:
        await accounts(eligibility).verify(Principal("m1", Role.STORE_MAIN, "s1"), Context())  # type: ignore[arg-type]
    assert relayed.value.code is grpc.StatusCode.PERMISSION_DENIED


async def guarded(guard: StoreAccountGuard, principal: Principal, context: Context) -> str:
    async def call(request: object, context: object) -> str:
        return "served"

    bound = principal_var.set(principal)
    try:
        return await guard.around(None, None, context, call)  # type: ignore[no-any-return]
    finally:
        principal_var.reset(bound)


async def test_r1_the_guard_checks_store_main_callers_and_no_one_else() -> None:
    eligibility = Eligibility({"s1": "m1"})
    guard = StoreAccountGuard()
    guard.accounts = accounts(eligibility)
    for principal in (Principal("c1", Role.CONSUMER), Principal("a1", Role.STORE_SUB, "s1"), Principal("o", Role.OPS)):
        assert await guarded(guard, principal, Context()) == "served"
    assert eligibility.calls == 0
    assert await guarded(guard, Principal("m1", Role.STORE_MAIN, "s1"), Context()) == "served"
    context = Context()
    with pytest.raises(RuntimeError, match="aborted"):
        await guarded(guard, Principal("m0", Role.STORE_MAIN, "s1"), context)
    assert context.aborted.code is grpc.StatusCode.PERMISSION_DENIED
    assert eligibility.calls == 2


async def test_an_unbound_guard_refuses_to_serve_rather_than_admit() -> None:
    with pytest.raises(RuntimeError, match="before the gateway opened"):
        await guarded(StoreAccountGuard(), Principal("m1", Role.STORE_MAIN, "s1"), Context())
