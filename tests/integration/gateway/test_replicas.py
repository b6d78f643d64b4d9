"""Replicas share the load: the gateway spreads calls over every replica a backend target names.

Two replicas each of groups and campaigns on one PostgreSQL, behind one target each
(``ipv4:a,b``, as a headless Service's name resolves to every pod); a gateway pointed at
those targets. Each replica serves 35–65 % of the calls (from its own ``/metrics``), and
killing one replica moves every call to the other with no failed idempotent call.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from cli.stack import free_port, wait_serving
from gateway.auth import Principal, Role
from qun.gateway.v1 import campaigns_pb2, campaigns_pb2_grpc, gateway_pb2
from tests.flows.test_create_and_join import new_group, new_store
from tests.support import postgres
from tests.support.stack import GatewayClient, RunningStack, running_stack, unique

CALLS = 200


@dataclass(eq=False)
class Extra:
    """A process started beside the stack: a second replica, or a second gateway."""

    name: str
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def served(self, method: str) -> float:
        """How many calls of ``method`` this process answered, from its /metrics."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("grpc_server_handled_total{") and f'grpc_method="{method}"' in line
        )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    if not postgres.available():
        pytest.skip("replicas share one PostgreSQL")
    with running_stack(tmp_path_factory.mktemp("replicas"), "postgres") as running:
        yield running


@contextlib.contextmanager
def extra_process(platform: RunningStack, name: str, module: str, log: Path, **env: str) -> Iterator[Extra]:
    grpc_port, metrics_port = free_port(), free_port()
    process_env = platform.stack.env_for(name)
    process_env.update(
        QUN_GRPC_PORT=str(grpc_port), QUN_METRICS_PORT=str(metrics_port), QUN_HTTP_PORT=str(free_port()), **env
    )
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", module], env=process_env, stdout=out, stderr=out)
    extra = Extra(name, grpc_port, metrics_port, process)
    try:
        wait_serving(extra.address, 30)
        yield extra
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(15)


def the_stacks_own(platform: RunningStack, name: str) -> Extra:
    endpoint = platform.stack.endpoints[name]
    return Extra(name, endpoint.grpc_port, endpoint.metrics_port, platform.stack.processes[name])


async def test_the_gateway_spreads_calls_over_every_replica_and_moves_off_a_dead_one(
    platform: RunningStack, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as started:
        groups2 = started.enter_context(extra_process(platform, "groups", "services.groups", tmp_path / "groups-2.log"))
        campaigns2 = started.enter_context(
            extra_process(platform, "campaigns", "services.campaigns", tmp_path / "campaigns-2.log")
        )
        groups1, campaigns1 = the_stacks_own(platform, "groups"), the_stacks_own(platform, "campaigns")
        gateway = started.enter_context(
            extra_process(
                platform,
                "gateway",
                "gateway",
                tmp_path / "gateway-2.log",
                QUN_GROUPS_ADDR=f"ipv4:{groups1.address},{groups2.address}",
                QUN_CAMPAIGNS_ADDR=f"ipv4:{campaigns1.address},{campaigns2.address}",
            )
        )
        client = GatewayClient(gateway.address, platform.stack.secrets["QUN_TOKEN_SECRET"])
        try:
            await spread_and_failover(client, platform, (groups1, groups2), (campaigns1, campaigns2))
        finally:
            await client.close()


async def spread_and_failover(
    client: GatewayClient, platform: RunningStack, groups: tuple[Extra, Extra], campaigns: tuple[Extra, Extra]
) -> None:
    store_id, main_id = await new_store(client, platform)
    group_set = await new_group(client, store_id, main_id)
    item_id = unique("i")
    shop = campaigns_pb2_grpc.CampaignServiceStub(client.channel)
    upstream = client.auth(Principal("upstream-1", Role.UPSTREAM))
    await shop.ReportItem(
        campaigns_pb2.ReportItemRequest(
            store_id=store_id, item_id=item_id, platform=1, sku_count=1, price_min_fen=100, price_max_fen=100
        ),
        metadata=upstream,
    )
    reader = client.auth(client.consumer(unique("c")))
    read_set = gateway_pb2.GetGroupSetRequest(group_set_id=group_set.group_set_id)
    read_item = campaigns_pb2.GetItemRequest(store_id=store_id, item_id=item_id)

    async def reads() -> None:
        await client.groups.GetGroupSet(read_set, metadata=reader, timeout=10)
        await shop.GetItem(read_item, metadata=upstream, timeout=10)

    methods = ((groups, "GetGroupSet"), (campaigns, "GetItem"))
    before = {r: r.served(method) for pair, method in methods for r in pair}
    await asyncio.gather(*(reads() for _ in range(CALLS)))
    for pair, method in methods:
        counts = [r.served(method) - before[r] for r in pair]
        assert sum(counts) == CALLS, (method, counts)
        assert all(0.35 * CALLS <= count <= 0.65 * CALLS for count in counts), (method, counts)

    # A replica dies: every idempotent call still succeeds, on the one left.
    groups[1].process.send_signal(signal.SIGKILL)
    groups[1].process.wait(10)
    survivor_before = groups[0].served("GetGroupSet")
    await asyncio.gather(*(client.groups.GetGroupSet(read_set, metadata=reader, timeout=10) for _ in range(CALLS)))
    assert groups[0].served("GetGroupSet") - survivor_before == CALLS


async def test_a_rate_limit_is_the_platforms_across_gateway_replicas(platform: RunningStack, tmp_path: Path) -> None:
    """Two gateway replicas, each told there are two: one caller spread over both gets the configured
    burst and rate in all, not twice them."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[abuse]\nconsumer_rate = 20\nconsumer_burst = 20\n")
    limits = {"QUN_RULES_FILE": str(rules), "QUN_GATEWAY_REPLICAS": "2"}
    with contextlib.ExitStack() as started:
        gateways = [
            started.enter_context(extra_process(platform, "gateway", "gateway", tmp_path / f"gw-{n}.log", **limits))
            for n in range(2)
        ]
        clients = [GatewayClient(g.address, platform.stack.secrets["QUN_TOKEN_SECRET"]) for g in gateways]
        try:
            caller = clients[0].auth(clients[0].consumer(unique("c")))
            request = gateway_pb2.ListMyGroupsRequest()
            loop = asyncio.get_running_loop()
            started_at = loop.time()
            codes: list[grpc.StatusCode] = []
            for n in range(120):
                try:
                    await clients[n % 2].groups.ListMyGroups(request, metadata=caller, timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
            elapsed = loop.time() - started_at
        finally:
            for client in clients:
                await client.close()
    admitted = codes.count(grpc.StatusCode.OK)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    # The configured burst, plus what the configured rate refilled meanwhile: never two replicas' worth.
    assert 20 <= admitted <= 20 + 20 * elapsed + 2, (admitted, elapsed)
