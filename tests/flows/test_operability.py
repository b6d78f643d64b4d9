"""What ops see of a running stack: reflection (grpcurl), health, /metrics."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.auth import Principal, Role
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import campaigns_pb2, campaigns_pb2_grpc, gateway_pb2
from tests.support import facts
from tests.support.stack import GatewayClient, RunningStack, unique

EXPECTED_SERVICES = {
    "gateway": {
        "qun.gateway.v1.GroupService",
        "qun.gateway.v1.FactService",
        "qun.gateway.v1.GroupOperationsService",
        "qun.gateway.v1.DiscoveryService",
        "qun.gateway.v1.CampaignService",
        "qun.gateway.v1.PushService",
    },
    "eligibility": {"qun.eligibility.v1.EligibilityService"},
    "groups": {"qun.groups.v1.GroupsService", "qun.groups.v1.GroupLifecycleService"},
    "campaigns": {"qun.campaigns.v1.CampaignsService"},
    "push": {"qun.push.v1.PushService"},
}
ALWAYS = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
GRPCURL = Path(sys.executable).parent / "grpcurl"


def test_grpcurl_lists_services_health_and_reflection(platform: RunningStack) -> None:
    for name, endpoint in platform.stack.endpoints.items():
        listed = subprocess.run(
            [str(GRPCURL), "-plaintext", endpoint.address, "list"], capture_output=True, text=True, timeout=30
        )
        assert listed.returncode == 0, listed.stderr
        assert set(listed.stdout.split()) == EXPECTED_SERVICES[name] | ALWAYS


async def test_every_process_reports_serving(platform: RunningStack) -> None:
    for endpoint in platform.stack.endpoints.values():
        async with grpc.aio.insecure_channel(endpoint.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_metrics_count_handled_calls_on_every_process(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = unique("s"), unique("m")
    await gw.report(facts.store(store_id, main_id, platform.now))
    await gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(
            kind=common_pb2.GROUP_KIND_STORE,
            name="metrics",
            threshold=common_pb2.Threshold(follow=common_pb2.FollowThreshold()),
        ),
        metadata=gw.auth(gw.main_account(main_id, store_id)),
    )
    await campaigns_pb2_grpc.CampaignServiceStub(gw.channel).ReportItem(
        campaigns_pb2.ReportItemRequest(
            store_id=store_id,
            item_id="metrics-item",
            platform=facts_pb2.PLATFORM_TAOBAO,
            sku_count=1,
            price_min_fen=100,
            price_max_fen=100,
            initial_stock=1,
        ),
        metadata=gw.auth(Principal("upstream-metrics", Role.UPSTREAM)),
    )
    for name, endpoint in platform.stack.endpoints.items():
        with urllib.request.urlopen(endpoint.metrics_url, timeout=5) as page:
            text = page.read().decode()
        assert "grpc_server_handled_total{" in text, name
        assert 'grpc_code="OK"' in text, name
    with urllib.request.urlopen(platform.stack.gateway.metrics_url, timeout=5) as page:
        gateway_text = page.read().decode()
    client_lines = [line for line in gateway_text.splitlines() if line.startswith("grpc_client_handled_total{")]
    assert any('grpc_method="CheckCreate"' in line and 'grpc_code="OK"' in line for line in client_lines)
    assert any('grpc_method="CreateGroupSet"' in line for line in client_lines)
