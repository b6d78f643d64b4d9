"""Who may call what: every public RPC × every kind of caller, bad tokens, bare backends, secrets in logs.

``ALLOWED`` is the table: RPC name → the principal kinds whose call must get
past authorisation (any answer but PERMISSION_DENIED / UNAUTHENTICATED); every
other kind must be refused with one of those two. Each cell's request names
real fixtures (a store, its group-set, a sub-account appointed super admin, a
plain sub-account, a streamer, a member consumer, an item, an activity, a
purchase), so a refusal is the authorisation's and not a missing object's.
A new RPC without a row fails the test.

Calls that change the fixtures run after the reads, and their denied cells
before the allowed ones, so each cell sees the fixtures as they were built.
The whole module shares one stack, so it is one test (pytest-xdist may split
a module's tests between workers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import jwt
from google.protobuf import descriptor as pbd

from gateway.auth import Principal, Role, mint_token
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import campaigns_pb2, gateway_pb2, operations_pb2, push_pb2
from tests.support import facts
from tests.support.facts import ts
from tests.support.hostile import (
    PUBLIC_RPCS,
    Rpc,
    World,
    backend_rpcs,
    internal_metadata,
    log_files,
    log_problems,
)
from tests.support.stack import unique

# "former_main" holds a store_main token of the right store whose account is no longer its main account
# (right role and store, wrong account): refused everywhere, like a stranger.
KINDS = ("store_main", "store_sub", "super_admin", "streamer", "consumer", "ops", "upstream", "former_main", "none")
ANYONE = frozenset(KINDS) - {"none", "former_main"}
STAFF = frozenset({"store_main", "store_sub", "super_admin", "ops"})  # the store's accounts, and ops
OWNER_AND_ADMINS = frozenset({"store_main", "super_admin"})
MAIN = frozenset({"store_main"})
CONSUMER = frozenset({"consumer"})
OPS = frozenset({"ops"})
UPSTREAM = frozenset({"upstream"})
REFUSED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}

ALLOWED: dict[str, frozenset[str]] = {
    # GroupService
    "CreateGroupSet": MAIN,  # a store group (E1); live groups are the streamer's (E4)
    "ExplainCreate": MAIN,
    "GetGroupSet": ANYONE,
    "ListGroupSets": ANYONE,
    "JoinGroupSet": CONSUMER,  # C12: only the consumer joins
    "ExplainJoin": CONSUMER,
    "LeaveGroupSet": CONSUMER,
    "ListMyGroups": CONSUMER,
    "RemoveMember": OWNER_AND_ADMINS,  # R5: the owner and super admins remove members
    "ListMyRemovals": CONSUMER,  # R5: the removed member reads why
    "AddAdmin": MAIN,  # R2
    "RemoveAdmin": MAIN,
    "UpdateGroupSetSettings": OWNER_AND_ADMINS,
    "DissolveGroupSet": MAIN,
    "SetGroupLevel": OPS,
    "ReportFacts": UPSTREAM,
    # GroupOperationsService
    "ReportMonthlyMetrics": UPSTREAM,
    "ReportMemberActivity": UPSTREAM,
    "RunJob": OPS,
    "ApplyForExpansion": MAIN,  # T3
    "GetCapacity": STAFF,
    "SetSleepingPlan": MAIN,  # C15
    "ListAuditEntries": STAFF,
    "WhatIfThreshold": OWNER_AND_ADMINS,  # X2
    # DiscoveryService
    "GetStorePageModule": CONSUMER,
    "GetItemPageModule": CONSUMER,
    "RecommendAfterPurchase": CONSUMER,
    "CheckPostComponent": ANYONE,
    "CheckMessage": UPSTREAM,
    # CampaignService
    "ReportItem": UPSTREAM,
    "Restock": UPSTREAM | MAIN,
    "CancelPurchase": UPSTREAM,
    "GetItem": ANYONE,
    "ListSales": STAFF | UPSTREAM,
    "CreateActivity": OWNER_AND_ADMINS,
    "CreateTrumpet": MAIN,  # M12
    "EndActivity": OWNER_AND_ADMINS,
    "GetActivity": ANYONE,
    "ListActivities": ANYONE,
    "GetFlashSaleResults": STAFF,
    "ListRefunds": STAFF,
    "PriceOrder": CONSUMER,
    "Purchase": CONSUMER,
    "GetPurchase": STAFF | UPSTREAM | CONSUMER,  # the consumer's own purchase
    "ClaimPrize": CONSUMER,
    "ListMyWallet": CONSUMER,
    "Vote": CONSUMER,
    "CheckIn": CONSUMER,
    "ListEndCards": STAFF | CONSUMER,  # staff, and members of the group-set
    "WatchEndCards": STAFF | CONSUMER,
    "RunExpiry": OPS,
    # PushService
    "SubmitPush": MAIN,
    "CancelPush": MAIN,  # P6
    "ReviewPush": OPS,  # P6
    "ListPendingReviews": OPS,  # P8: ops' review queue across stores
    "GetPush": STAFF,
    "ListPushes": STAFF,
    "GetQuotaLedger": STAFF,
    "ListPushNotices": STAFF,
    "GrantMassSend": OPS | UPSTREAM,  # P5
    "StreamDeliveries": UPSTREAM,  # P7
}

# Run after every other RPC, in this order: they change or remove fixtures others use.
LAST = ("EndActivity", "LeaveGroupSet", "RemoveAdmin", "DissolveGroupSet")


async def fresh_member(world: World) -> str:
    """A consumer who has just joined the group-set: each RemoveMember cell removes a real member of its own."""
    from qun.gateway.v1 import gateway_pb2_grpc

    consumer = unique("c")
    await gateway_pb2_grpc.FactServiceStub(world.channel()).ReportFacts(
        gateway_pb2.ReportFactsRequest(facts=facts.consumer(consumer, follows=(world.store_id,))),
        metadata=world.auth(world.principals()["upstream"]),
        timeout=10,
    )
    await gateway_pb2_grpc.GroupServiceStub(world.channel()).JoinGroupSet(
        gateway_pb2.JoinGroupSetRequest(group_set_id=world.group_set_id),
        metadata=world.auth(Principal(consumer, Role.CONSUMER)),
        timeout=10,
    )
    return consumer


def requests(world: World, activity_id: str, purchase_id: str) -> dict[str, Callable[[], Any]]:
    """Per-RPC requests where filling fields by name is not enough (see ``generic``)."""
    window = {"starts_at": ts(world.platform.now), "ends_at": ts(world.platform.now + timedelta(hours=1))}
    follow = common_pb2.Threshold(follow=common_pb2.FollowThreshold())
    return {
        "CreateGroupSet": lambda: gateway_pb2.CreateGroupSetRequest(
            kind=common_pb2.GROUP_KIND_STORE, name=unique("群"), threshold=follow
        ),
        "ExplainCreate": lambda: gateway_pb2.ExplainCreateRequest(kind=common_pb2.GROUP_KIND_STORE),
        # The caller's own verdict; naming another account (ops only, X1) is test_create_and_join's.
        "ExplainJoin": lambda: gateway_pb2.ExplainJoinRequest(group_set_id=world.group_set_id),
        "ListGroupSets": lambda: gateway_pb2.ListGroupSetsRequest(store_id=world.store_id),
        "LeaveGroupSet": lambda: gateway_pb2.LeaveGroupSetRequest(group_set_id=world.spare_group_set_id),
        "AddAdmin": lambda: gateway_pb2.AddAdminRequest(group_set_id=world.spare_group_set_id, account_id=world.sub_id),
        "RemoveAdmin": lambda: gateway_pb2.RemoveAdminRequest(
            group_set_id=world.group_set_id, account_id=world.spare_admin_id
        ),
        "UpdateGroupSetSettings": lambda: gateway_pb2.UpdateGroupSetSettingsRequest(
            group_id=world.group_set_id, announcement="公告"
        ),
        "DissolveGroupSet": lambda: gateway_pb2.DissolveGroupSetRequest(group_set_id=world.spare_group_set_id),
        "RemoveMember": lambda: gateway_pb2.RemoveMemberRequest(
            group_set_id=world.group_set_id, consumer_id=world.run(fresh_member(world)), reason="R5"
        ),
        "SetGroupLevel": lambda: gateway_pb2.SetGroupLevelRequest(store_id=world.store_id, month="2026-02", level=1),
        "RunJob": lambda: operations_pb2.RunJobRequest(job=operations_pb2.JOB_SLEEPING),
        "ListAuditEntries": lambda: operations_pb2.ListAuditEntriesRequest(store_id=world.store_id),
        "WhatIfThreshold": lambda: operations_pb2.WhatIfThresholdRequest(
            group_set_id=world.group_set_id, threshold=follow
        ),
        "CreateActivity": lambda: campaigns_pb2.CreateActivityRequest(
            group_set_id=world.group_set_id,
            title="投票",
            voting=campaigns_pb2.VotingSpec(options=["甲", "乙"]),
            **window,
        ),
        "GetPurchase": lambda: campaigns_pb2.GetPurchaseRequest(store_id=world.store_id, purchase_id=purchase_id),
        "ReviewPush": lambda: push_pb2.ReviewPushRequest(push_id="p_none", decision=1),
    }


def generic(world: World, rpc: Rpc, activity_id: str) -> Any:
    """Fills every scalar field by its name with a fixture's id (or a plausible value)."""
    by_name = {
        "store_id": world.store_id,
        "group_set_id": world.group_set_id,
        "group_id": world.group_set_id,
        "consumer_id": world.member_id,
        "streamer_id": world.streamer_id,
        "item_id": world.item_id,
        "account_id": world.outsider_id,
        "activity_id": activity_id,
        "request_id": None,
    }
    request = rpc.request()
    for field in rpc.request.DESCRIPTOR.fields:
        if field.is_repeated or field.message_type is not None:
            continue
        if field.name in by_name:
            setattr(request, field.name, by_name[field.name] or unique("r"))
        elif field.type == pbd.FieldDescriptor.TYPE_ENUM:
            setattr(request, field.name, field.enum_type.values[1].number)
        elif field.type == pbd.FieldDescriptor.TYPE_STRING and field.name.endswith("_id"):
            setattr(request, field.name, unique("x"))
    return request


async def activity_and_purchase(world: World) -> tuple[str, str]:
    """A voting activity in the group-set, and a purchase of the item by the member."""
    from qun.gateway.v1 import campaigns_pb2_grpc

    api = campaigns_pb2_grpc.CampaignServiceStub(world.channel())
    now = world.platform.now
    owner = world.auth(world.principals()["store_main"])
    created = await api.CreateActivity(
        campaigns_pb2.CreateActivityRequest(
            group_set_id=world.group_set_id,
            title="投票",
            starts_at=ts(now),
            ends_at=ts(now + timedelta(hours=1)),
            voting=campaigns_pb2.VotingSpec(options=["甲", "乙"]),
        ),
        metadata=owner,
        timeout=10,
    )
    bought = await api.Purchase(
        campaigns_pb2.PurchaseRequest(
            request_id=unique("buy"),
            store_id=world.store_id,
            order=campaigns_pb2.Order(item_id=world.item_id, quantity=1),
        ),
        metadata=world.auth(world.principals()["consumer"]),
        timeout=10,
    )
    return created.activity.activity_id, bought.purchase.purchase_id


def matrix(world: World, activity_id: str, purchase_id: str) -> list[str]:
    special = requests(world, activity_id, purchase_id)
    principals = world.principals()
    order = sorted(PUBLIC_RPCS, key=lambda rpc: (LAST.index(rpc.name) if rpc.name in LAST else -1))
    wrong: list[str] = []
    for rpc in order:
        allowed = ALLOWED.get(rpc.name)
        if allowed is None:
            wrong.append(f"{rpc}: no row in ALLOWED")
            continue
        build = special.get(rpc.name) or (lambda rpc=rpc: generic(world, rpc, activity_id))
        for kind in sorted(KINDS, key=lambda k: k in allowed):  # denied cells first
            code = world.run(world.call(rpc, build(), principals[kind]))
            if kind in allowed and code in REFUSED:
                wrong.append(f"{rpc} as {kind}: {code.name}, but the table allows it")
            elif kind not in allowed and code not in REFUSED:
                wrong.append(f"{rpc} as {kind}: {code.name}, but the table refuses it")
            elif kind == "none" and code is not grpc.StatusCode.UNAUTHENTICATED:
                wrong.append(f"{rpc} without a token: {code.name}")
    return wrong


def bad_tokens(world: World) -> list[str]:
    """Expired, another key, ``alg: none``, malformed; and a store's token for another store."""
    secret = world.secret
    owner = world.principals()["store_main"]
    assert owner is not None
    now = int(time.time())
    claims = {"iss": "qun", "sub": owner.subject, "role": "store_main", "store": owner.store_id, "iat": now}
    tokens = {
        "expired": mint_token(secret, owner, ttl_seconds=60, now=now - 3600),
        "another key": mint_token("another-secret-0123456789abcdef0123", owner),
        "alg none": jwt.encode({**claims, "exp": now + 600}, None, algorithm="none"),  # type: ignore[arg-type]
        "no expiry": jwt.encode(claims, secret, algorithm="HS256"),
        "unknown role": jwt.encode({**claims, "role": "root", "exp": now + 600}, secret, algorithm="HS256"),
        "not a jwt": "not.a.token",
    }
    world.tokens.extend(tokens.values())
    get = next(rpc for rpc in PUBLIC_RPCS if rpc.name == "GetCapacity")
    request = operations_pb2.GetCapacityRequest(store_id=world.store_id)
    wrong = []
    for label, token in tokens.items():
        for header in (f"Bearer {token}", token, f"Basic {token}"):
            code = world.run(raw_call(world, get, request, (("authorization", header),)))
            if code is not grpc.StatusCode.UNAUTHENTICATED:
                wrong.append(f"{label} token ({header[:8]}…): {code.name}")
    # A valid token of another store's main account reads nothing of this store.
    other = Principal(world.other_main_id, Role.STORE_MAIN, world.other_store_id)
    for rpc_name, req in (
        ("GetCapacity", request),
        ("ListPushes", push_pb2.ListPushesRequest(store_id=world.store_id)),
        ("ListAuditEntries", operations_pb2.ListAuditEntriesRequest(store_id=world.store_id)),
        ("UpdateGroupSetSettings", gateway_pb2.UpdateGroupSetSettingsRequest(group_id=world.group_set_id, name="x")),
        ("Restock", campaigns_pb2.RestockRequest(store_id=world.store_id, item_id=world.item_id, quantity=1)),
    ):
        rpc = next(r for r in PUBLIC_RPCS if r.name == rpc_name)
        code = world.run(world.call(rpc, req, other))
        if code is not grpc.StatusCode.PERMISSION_DENIED:
            wrong.append(f"another store's main account, {rpc_name}: {code.name}")
    return wrong


def impostors(world: World, activity_id: str) -> list[str]:
    """A token whose subject is the owner's or an admin's account id, but with another role or store.

    Staff checks compare account ids; they must compare the role (and store) too.
    """
    special = requests(world, activity_id, "")
    fakes = {
        f"{role.value} named like the {who}": Principal(subject, role, store)
        for who, subject in (("owner", world.main_id), ("super admin", world.admin_id))
        for role, store in (
            (Role.CONSUMER, ""),
            (Role.STREAMER, ""),
            (Role.OPS, ""),
            (Role.UPSTREAM, ""),
            (Role.STORE_MAIN, world.other_store_id),
            (Role.STORE_SUB, world.other_store_id),
        )
    }
    wrong = []
    for name in (
        "UpdateGroupSetSettings",
        "WhatIfThreshold",
        "CreateActivity",
        "EndActivity",
        "CreateTrumpet",
        "AddAdmin",
        "RemoveMember",
    ):
        rpc = next(r for r in PUBLIC_RPCS if r.name == name)
        build = special.get(name) or (lambda rpc=rpc: generic(world, rpc, activity_id))
        for label, principal in fakes.items():
            if principal.role is Role.OPS and "ops" in ALLOWED[name]:
                continue
            code = world.run(world.call(rpc, build(), principal))
            if code not in REFUSED | {grpc.StatusCode.NOT_FOUND}:  # not found in the caller's own store is fine
                wrong.append(f"{rpc} as a {label}: {code.name}")
    return wrong


async def raw_call(world: World, rpc: Rpc, request: Any, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    try:
        await world.channel().unary_unary(rpc.path, rpc.request.SerializeToString, rpc.response.FromString)(
            request, metadata=metadata, timeout=10
        )
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        return error.code()


def bare_backends(world: World) -> list[str]:
    """Straight to each backend: without the internal credential (or with a wrong one) → UNAUTHENTICATED."""
    wrong = []
    for process, rpcs in backend_rpcs().items():
        for rpc in rpcs:
            for metadata in ((), internal_metadata("wrong-" + world.internal_token)):
                code = world.run(world.raw(process, rpc, rpc.request().SerializeToString(), metadata))
                if code is not grpc.StatusCode.UNAUTHENTICATED:
                    wrong.append(f"{process} {rpc} {'wrong' if metadata else 'no'} credential: {code.name}")
    return wrong


def secrets_in_logs(world: World) -> list[str]:
    secrets = {"token secret": world.secret, "internal token": world.internal_token}
    secrets.update({f"bearer token {i}": token for i, token in enumerate(set(world.tokens))})
    found = []
    for path in log_files(world.platform):
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{name} in {path.name}" for name, value in secrets.items() if value and value in text]
    return found


def test_authorisation_matrix_tokens_backends_and_logs(world: World) -> None:
    activity_id, purchase_id = world.run(activity_and_purchase(world))
    wrong = impostors(world, activity_id)
    wrong += matrix(world, activity_id, purchase_id)
    wrong += bad_tokens(world)
    wrong += bare_backends(world)
    assert wrong == [], "\n".join(wrong)
    assert set(world.run(world.serving()).values()) == {"SERVING"}
    assert len(world.tokens) > 100
    assert secrets_in_logs(world) == []
    assert log_problems(world.platform) == []
