"""Who may act on a store and its group-sets: store roles, store scope, the main account, owner and staff.

The one place the gateway decides access beyond a role (``Principal.require``):

- **Store scope.** A store's accounts act on their own store only; ops on any.
- **The main account, now.** A ``store_main`` token names an account and a
  store; the account must be that store's main account as the facts say now
  (``StoreAccountGuard``), so a former main account whose token has not
  expired is refused on every call, mutation or read, like any other account
  (SPEC E1, R1; the authorisation table's "former main account" row).
- **Owner and staff of a group-set** (R1, R2): the owner is the store's main
  account (or the streamer of a storeless live group), the staff are the owner
  and the super admins; ids are compared together with role and store, so a
  consumer whose id imitates the owner's is nobody's owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from gateway.auth import Principal, Role, current_principal, principal_var
from gateway.backends import Backends, Retry
from gateway.downstream import Relayed
from qun.eligibility.v1 import eligibility_pb2
from services.common.errors import PermissionDenied
from services.common.interceptors import GateInterceptor, abort_with

STORE_ROLES = frozenset({Role.STORE_MAIN, Role.STORE_SUB})
LIVE_GROUP_KIND = 2  # qun.common.v1.GroupKind.GROUP_KIND_LIVE


class GroupSetLike(Protocol):
    """What the access checks read of a group-set: the internal message, the public one, a kept copy."""

    @property
    def kind(self) -> int: ...

    @property
    def store_id(self) -> str: ...

    @property
    def owner_account_id(self) -> str: ...

    @property
    def admin_ids(self) -> Sequence[str]: ...


def is_owner(principal: Principal, group_set: GroupSetLike) -> bool:
    """The group-set's owner: its store's main account (or the streamer of a storeless live group).

    Ids are compared together with the role and store, so a consumer (or another
    store's account) whose id happens to equal the owner's is not the owner.
    """
    if principal.subject != group_set.owner_account_id:
        return False
    if principal.role is Role.STORE_MAIN:
        return principal.store_id == group_set.store_id
    return principal.role is Role.STREAMER and not group_set.store_id and group_set.kind == LIVE_GROUP_KIND


def is_staff(principal: Principal, group_set: GroupSetLike) -> bool:
    """The owner, or a super admin in a role that can be one: the store's sub-account, or the
    streamer of a live fan group (E4)."""
    if is_owner(principal, group_set):
        return True
    if principal.subject not in group_set.admin_ids:
        return False
    if principal.role is Role.STORE_SUB:
        return principal.store_id == group_set.store_id
    return principal.role is Role.STREAMER and group_set.kind == LIVE_GROUP_KIND


def caller_is_staff(group_set: GroupSetLike) -> bool:
    """Whether the current caller is the set's owner or one of its super admins (its staff fields show)."""
    principal = principal_var.get(None)
    return principal is not None and is_staff(principal, group_set)


def is_staff_account(account_id: str, group_set: GroupSetLike) -> bool:
    """C2/C3: whether an account is the set's owner or one of its super admins, by id alone.

    A join and the messaging system's CheckMessage name an account (the joining
    consumer, the sender), not a staff principal, so the exemption from the
    淘气值 bar is decided on the id: the owner and the super admins are exempt
    from C2 (SPEC), and so their messages are never hidden (C3) — one rule for
    both paths. Access to staff-only calls is ``is_owner``/``is_staff``.
    """
    return account_id == group_set.owner_account_id or account_id in group_set.admin_ids


def require_store_scope(principal: Principal, store_id: str, *roles: Role, anywhere: Sequence[Role] = ()) -> None:
    """``roles`` act on their own store only; ops, and the ``anywhere`` roles, on any store.

    PERMISSION_DENIED for any other role, and for a store token of another store.
    """
    if principal.role is Role.OPS or principal.role in anywhere:
        return
    principal.require(*roles, *anywhere, Role.OPS)
    if principal.store_id != store_id:
        raise PermissionDenied("the token's store is not this store")


def require_store_staff(principal: Principal, store_id: str) -> None:
    """The store's own accounts (main and sub-accounts) and ops read the store's books."""
    require_store_scope(principal, store_id, *STORE_ROLES)


class MainAccounts:
    """The account each store's main account is now, as the facts upstream reported say (eligibility)."""

    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def verify(self, principal: Principal, context: grpc.aio.ServicerContext) -> None:
        """PERMISSION_DENIED unless a ``store_main`` token's account is its store's main account now."""
        try:
            found = await self.backends.call(
                self.backends.eligibility.GetStore,
                eligibility_pb2.GetStoreRequest(store_id=principal.store_id),
                context,
                retry=Retry.SAFE,
            )
        except Relayed as error:
            if error.code is not grpc.StatusCode.NOT_FOUND:
                raise
            raise PermissionDenied(f"store {principal.store_id} is not known to the platform", rule_id="E1") from None
        if found.store.main_account_id != principal.subject:
            raise PermissionDenied(
                f"{principal.subject} is not store {principal.store_id}'s main account", rule_id="R1"
            )


class StoreAccountGuard(GateInterceptor):
    """After authentication: a ``store_main`` caller must be its store's main account now (``MainAccounts``).

    The gateway binds ``accounts`` once its channels are open.
    """

    def __init__(self) -> None:
        super().__init__()
        self.accounts: MainAccounts | None = None

    async def admit(self, request: Any, context: Any) -> None:
        principal = current_principal()
        if principal.role is not Role.STORE_MAIN:
            return
        if self.accounts is None:  # pragma: no cover - the app binds it before serving
            raise RuntimeError("StoreAccountGuard used before the gateway opened its channels")
        try:
            await self.accounts.verify(principal, context)
        except (PermissionDenied, Relayed) as error:
            await abort_with(context, error)
