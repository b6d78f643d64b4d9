"""Shared by the fuzz and authorisation suites: every public RPC, a world of real principals, checks.

The RPC list comes from the service descriptors, so a new RPC is covered as
soon as it is in a proto. ``World`` drives one running stack from a private
event loop, which lets hypothesis (synchronous) call the gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.auth import Principal, Role, mint_token
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import campaigns_pb2, gateway_pb2, operations_pb2, push_pb2
from services.common.interceptors import INTERNAL_TOKEN_HEADER
from services.common.processes import PROCESSES
from tests.support import facts, postgres
from tests.support.stack import RunningStack, running_stack, unique

PUBLIC_MODULES = (gateway_pb2, operations_pb2, campaigns_pb2, push_pb2)
# Never a fair answer to a caller's input, however hostile.
BROKEN = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})
T = TypeVar("T")


@dataclass(frozen=True)
class Rpc:
    service: str  # full name, e.g. qun.gateway.v1.GroupService
    name: str
    request: type[Any]
    response: type[Any]
    streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    def __str__(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}.{self.name}"


def rpcs_of(modules: tuple[Any, ...]) -> list[Rpc]:
    found = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append(
                    Rpc(
                        service.full_name,
                        method.name,
                        message_factory.GetMessageClass(method.input_type),
                        message_factory.GetMessageClass(method.output_type),
                        method.server_streaming,
                    )
                )
    return found


PUBLIC_RPCS = rpcs_of(PUBLIC_MODULES)


def backend_rpcs() -> dict[str, list[Rpc]]:
    """Each backend process's RPCs, from its services' descriptors."""
    from qun.campaigns.v1 import campaigns_pb2 as internal_campaigns
    from qun.eligibility.v1 import eligibility_pb2
    from qun.groups.v1 import groups_pb2, lifecycle_pb2
    from qun.push.v1 import push_pb2 as internal_push

    return {
        "eligibility": rpcs_of((eligibility_pb2,)),
        "groups": rpcs_of((groups_pb2, lifecycle_pb2)),
        "campaigns": rpcs_of((internal_campaigns,)),
        "push": rpcs_of((internal_push,)),
    }


def database() -> str:
    """PostgreSQL when it is there (or required), SQLite otherwise."""
    return "postgres" if os.environ.get("REQUIRE_POSTGRES") == "1" or postgres.available() else "sqlite"


def bearer(secret: str, principal: Principal | None) -> tuple[tuple[str, str], ...]:
    if principal is None:
        return ()
    return (("authorization", f"Bearer {mint_token(secret, principal)}"),)


@dataclass
class World:
    """Real fixtures in a running stack, and the principals that act on them."""

    platform: RunningStack
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)  # every bearer token minted, for the log check
    store_id: str = ""
    main_id: str = ""
    admin_id: str = ""  # a sub-account appointed super admin of the group-set
    spare_admin_id: str = ""  # another super admin, for RemoveAdmin
    sub_id: str = ""  # a sub-account that is not an admin
    streamer_id: str = ""
    member_id: str = ""  # a consumer in the group-set
    outsider_id: str = ""  # a consumer who follows the store but did not join
    group_set_id: str = ""
    spare_group_set_id: str = ""  # the member is in it too; for Leave and Dissolve
    item_id: str = ""
    other_store_id: str = ""
    other_main_id: str = ""
    former_main_id: str = ""  # the store's main account before main_id: right role and store, wrong account

    @property
    def secret(self) -> str:
        return self.platform.stack.secrets["QUN_TOKEN_SECRET"]

    @property
    def internal_token(self) -> str:
        return self.platform.stack.secrets["QUN_INTERNAL_TOKEN"]

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def channel(self, process: str = "gateway") -> grpc.aio.Channel:
        if process not in self.channels:  # inside the world's loop: a channel binds to the running loop
            self.channels[process] = grpc.aio.insecure_channel(self.platform.stack.endpoints[process].address)
        return self.channels[process]

    def auth(self, principal: Principal | None) -> tuple[tuple[str, str], ...]:
        metadata = bearer(self.secret, principal)
        if metadata:
            self.tokens.append(metadata[0][1].split(" ", 1)[1])
        return metadata

    def principals(self) -> dict[str, Principal | None]:
        """Every kind of caller, by the names the matrix uses."""
        return {
            "store_main": Principal(self.main_id, Role.STORE_MAIN, self.store_id),
            "store_sub": Principal(self.sub_id, Role.STORE_SUB, self.store_id),
            "super_admin": Principal(self.admin_id, Role.STORE_SUB, self.store_id),
            "streamer": Principal(self.streamer_id, Role.STREAMER),
            "consumer": Principal(self.member_id, Role.CONSUMER),
            "ops": Principal("ops-1", Role.OPS),
            "upstream": Principal("upstream-1", Role.UPSTREAM),
            "former_main": Principal(self.former_main_id, Role.STORE_MAIN, self.store_id),
            "none": None,
        }

    def ids(self) -> list[str]:
        """The real ids, so generated requests reach past "not found"."""
        return [
            value
            for value in (
                self.store_id,
                self.main_id,
                self.admin_id,
                self.sub_id,
                self.streamer_id,
                self.member_id,
                self.outsider_id,
                self.group_set_id,
                self.item_id,
                self.other_store_id,
            )
            if value
        ]

    async def call(self, rpc: Rpc, request: Any, principal: Principal | None, timeout: float = 10.0) -> grpc.StatusCode:
        """The status code of one call; a stream counts as OK once it is open without an error."""
        metadata = self.auth(principal)
        channel = self.channel()
        serialize, deserialize = rpc.request.SerializeToString, rpc.response.FromString
        try:
            if rpc.streaming:
                stream = channel.unary_stream(rpc.path, serialize, deserialize)(
                    request, metadata=metadata, timeout=timeout
                )
                try:
                    await asyncio.wait_for(stream.read(), 1.0)
                except TimeoutError:
                    return grpc.StatusCode.OK  # open and waiting for news
                finally:
                    stream.cancel()
                return grpc.StatusCode.OK
            await channel.unary_unary(rpc.path, serialize, deserialize)(request, metadata=metadata, timeout=timeout)
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            return error.code()

    async def raw(
        self, process: str, rpc: Rpc, body: bytes, metadata: tuple[tuple[str, str], ...], timeout: float = 10.0
    ) -> grpc.StatusCode:
        """Sends ``body`` as the request bytes, unchecked; the status code of the answer."""
        channel = self.channel(process)
        try:
            if rpc.streaming:
                stream = channel.unary_stream(rpc.path)(body, metadata=metadata, timeout=timeout)
                try:
                    await asyncio.wait_for(stream.read(), 1.0)
                except TimeoutError:
                    return grpc.StatusCode.OK
                finally:
                    stream.cancel()
                return grpc.StatusCode.OK
            await channel.unary_unary(rpc.path)(body, metadata=metadata, timeout=timeout)
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            return error.code()

    async def build(self) -> None:
        from qun.gateway.v1 import gateway_pb2_grpc

        groups = gateway_pb2_grpc.GroupServiceStub(self.channel())
        facts_api = gateway_pb2_grpc.FactServiceStub(self.channel())
        upstream = self.auth(Principal("upstream-1", Role.UPSTREAM))
        self.store_id, self.main_id = unique("s"), unique("m")
        self.admin_id, self.spare_admin_id, self.sub_id = unique("a"), unique("a"), unique("b")
        self.streamer_id, self.member_id, self.outsider_id = unique("st"), unique("c"), unique("c")
        self.other_store_id, self.other_main_id = unique("s"), unique("m")
        self.former_main_id = unique("m")
        now = self.platform.now
        former = facts.store(self.store_id, self.former_main_id, now, orders=0, level=None)
        await facts_api.ReportFacts(gateway_pb2.ReportFactsRequest(facts=former), metadata=upstream, timeout=30)
        reported = [
            *facts.store(
                self.store_id, self.main_id, now, sub_accounts=(self.admin_id, self.spare_admin_id, self.sub_id)
            ),
            *facts.store(self.other_store_id, self.other_main_id, now),
            *facts.streamer(self.streamer_id),
            *facts.consumer(self.member_id, follows=(self.store_id,)),
            *facts.consumer(self.outsider_id, follows=(self.store_id,)),
        ]
        await facts_api.ReportFacts(gateway_pb2.ReportFactsRequest(facts=reported), metadata=upstream, timeout=30)
        owner = self.auth(Principal(self.main_id, Role.STORE_MAIN, self.store_id))
        follow = common_pb2.Threshold(follow=common_pb2.FollowThreshold())
        sets = []
        for name in ("粉丝群", "备用群"):
            created = await groups.CreateGroupSet(
                gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name=name, threshold=follow),
                metadata=owner,
                timeout=10,
            )
            sets.append(created.group_set.group_set_id)
        self.group_set_id, self.spare_group_set_id = sets
        for admin in (self.admin_id, self.spare_admin_id):
            await groups.AddAdmin(
                gateway_pb2.AddAdminRequest(group_set_id=self.group_set_id, account_id=admin),
                metadata=owner,
                timeout=10,
            )
        member = self.auth(Principal(self.member_id, Role.CONSUMER))
        for group_set_id in sets:
            await groups.JoinGroupSet(
                gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id), metadata=member, timeout=10
            )
        self.item_id = unique("i")
        campaigns = self.channel().unary_unary(
            "/qun.gateway.v1.CampaignService/ReportItem",
            campaigns_pb2.ReportItemRequest.SerializeToString,
            campaigns_pb2.ReportItemResponse.FromString,
        )
        await campaigns(
            campaigns_pb2.ReportItemRequest(
                store_id=self.store_id,
                item_id=self.item_id,
                platform=1,
                sku_count=1,
                price_min_fen=10_000,
                price_max_fen=10_000,
                initial_stock=100,
            ),
            metadata=upstream,
            timeout=10,
        )

    async def snapshot(self) -> tuple[bytes, ...]:
        """A representative read of the fixtures: the group-set, the member's groups, the item's stock."""
        from qun.gateway.v1 import campaigns_pb2_grpc, gateway_pb2_grpc

        groups = gateway_pb2_grpc.GroupServiceStub(self.channel())
        campaigns = campaigns_pb2_grpc.CampaignServiceStub(self.channel())
        owner = self.auth(Principal(self.main_id, Role.STORE_MAIN, self.store_id))

        async def read(call: Awaitable[Any]) -> bytes:
            try:
                return (await call).SerializeToString(deterministic=True)  # type: ignore[no-any-return]
            except grpc.aio.AioRpcError as error:  # e.g. the owner dissolved the set: that is the state now
                if error.code() is not grpc.StatusCode.NOT_FOUND:
                    raise
                return error.code().name.encode()

        return (
            await read(
                groups.GetGroupSet(
                    gateway_pb2.GetGroupSetRequest(group_set_id=self.group_set_id), metadata=owner, timeout=10
                )
            ),
            await read(
                groups.ListMyGroups(
                    gateway_pb2.ListMyGroupsRequest(),
                    metadata=self.auth(Principal(self.member_id, Role.CONSUMER)),
                    timeout=10,
                )
            ),
            await read(
                campaigns.GetItem(
                    campaigns_pb2.GetItemRequest(store_id=self.store_id, item_id=self.item_id),
                    metadata=self.auth(Principal("upstream-1", Role.UPSTREAM)),
                    timeout=10,
                )
            ),
        )

    async def serving(self) -> dict[str, str]:
        """Each process's health status name."""
        out = {}
        for name in PROCESSES:
            try:
                reply = await health_pb2_grpc.HealthStub(self.channel(name)).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=5
                )
                out[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as error:
                out[name] = error.code().name
        return out

    def close(self) -> None:
        async def close_all() -> None:
            for channel in self.channels.values():
                await channel.close()

        self.run(close_all())
        self.loop.close()


def internal_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((INTERNAL_TOKEN_HEADER, token),)


def log_files(platform: RunningStack) -> list[Path]:
    return sorted((platform.stack.data_dir / "logs").glob("*.log"))


def log_problems(platform: RunningStack) -> list[str]:
    """Entries with a traceback, and lines that are not JSON (a crash's output), in every process log."""
    problems = []
    for path in log_files(platform):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                problems.append(f"{path.name}: not JSON: {line[:300]}")
                continue
            if isinstance(entry, dict) and "exception" in entry:
                problems.append(
                    f"{path.name}: {entry.get('msg')} {entry.get('method', '')}: {entry['exception'][-600:]}"
                )
    return problems


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[World]:
    """One running platform per test module (PostgreSQL when reachable), with real fixtures in it.

    The fuzz and security suites take it through their ``conftest.py``.
    """
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with running_stack(folder, database()) as platform:
        built = World(platform)
        try:
            built.run(built.build())
            yield built
        finally:
            built.close()
