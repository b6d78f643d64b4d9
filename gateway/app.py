"""The gateway process: bearer-token auth, channels to the backends, the public services."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import grpc

from gateway.access import MainAccounts, StoreAccountGuard
from gateway.auth import BearerAuthInterceptor
from gateway.backends import Backends
from gateway.bounds import BoundsInterceptor
from gateway.campaigns import CampaignService
from gateway.downstream import Downstream
from gateway.facts import FactService, StoreBlacklistRemovals
from gateway.groups import GroupService
from gateway.http import HttpFront, http_loop, listening_socket, with_cors
from gateway.operations import GroupOperations
from gateway.push import PushService, RecallNotices
from gateway.ratelimit import RateLimiter, RateLimitInterceptor
from gateway.recommendations import Discovery
from gateway.settings import GatewaySettings, load_gateway_settings
from qun.campaigns.v1 import campaigns_pb2_grpc as internal_campaigns_pb2_grpc
from qun.eligibility.v1 import eligibility_pb2_grpc
from qun.gateway.v1 import (
    campaigns_pb2,
    campaigns_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    operations_pb2,
    operations_pb2_grpc,
)
from qun.gateway.v1 import push_pb2 as public_push_pb2
from qun.gateway.v1 import push_pb2_grpc as public_push_pb2_grpc
from qun.groups.v1 import groups_pb2_grpc, lifecycle_pb2_grpc
from qun.push.v1 import push_pb2_grpc as internal_push_pb2_grpc
from services.common.client import internal_channel
from services.common.clock import Clock
from services.common.interceptors import Interceptor
from services.common.loops import Loop
from services.common.rules import Rules
from services.common.server import ServiceApp
from services.common.settings import Settings
from services.common.tls import TlsFiles

# The public API: every service of qun.gateway.v1, on the gRPC port and on the HTTP port alike.
PUBLIC_SERVICES = (
    gateway_pb2.DESCRIPTOR.services_by_name["GroupService"],
    gateway_pb2.DESCRIPTOR.services_by_name["FactService"],
    operations_pb2.DESCRIPTOR.services_by_name["GroupOperationsService"],
    operations_pb2.DESCRIPTOR.services_by_name["DiscoveryService"],
    campaigns_pb2.DESCRIPTOR.services_by_name["CampaignService"],
    public_push_pb2.DESCRIPTOR.services_by_name["PushService"],
)


class GatewayApp(ServiceApp):
    name = "gateway"
    answer_ids = True

    def __init__(
        self,
        settings: Settings,
        rules: Rules | None = None,
        clock: Clock | None = None,
        gateway_settings: GatewaySettings | None = None,
    ) -> None:
        super().__init__(settings, rules, clock)
        self.config = gateway_settings or load_gateway_settings(settings)
        self.channels: list[grpc.aio.Channel] = []
        self.account_guard = StoreAccountGuard()
        self.http_socket: socket.socket | None = None

    def tls(self) -> TlsFiles | None:
        """The gateway's own port is the public API: plaintext here (TLS ends at the ingress); its
        certificate is the client certificate it presents to the backends."""
        return None

    def auth_interceptor(self) -> Interceptor:
        return BearerAuthInterceptor(self.config.token_keys)

    def guard_interceptors(self) -> Sequence[Interceptor]:
        """The rate limit (when enabled), the bounds of every value (D2), then the store account check."""
        guards: list[Interceptor] = []
        if self.rules.abuse.enabled:
            guards.append(RateLimitInterceptor(RateLimiter(self.rules.abuse, replicas=self.config.replicas)))
        return (*guards, BoundsInterceptor(self.rules.bounds), self.account_guard)

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = internal_channel(target, self.settings.internal_token, record_metrics=True, tls=self.settings.tls)
        self.channels.append(channel)
        return channel

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        if self.config.http_bind:
            self.http_socket = listening_socket(self.config.http_bind)
        groups_channel = self._channel(self.config.groups_addr)
        backends = Backends(
            eligibility=eligibility_pb2_grpc.EligibilityServiceStub(self._channel(self.config.eligibility_addr)),
            groups=groups_pb2_grpc.GroupsServiceStub(groups_channel),
            lifecycle=lifecycle_pb2_grpc.GroupLifecycleServiceStub(groups_channel),
            campaigns=internal_campaigns_pb2_grpc.CampaignsServiceStub(self._channel(self.config.campaigns_addr)),
            push=internal_push_pb2_grpc.PushServiceStub(self._channel(self.config.push_addr)),
            downstream=Downstream(self.config.downstream_timeout, self.config.downstream_attempts),
        )
        self.account_guard.accounts = MainAccounts(backends)
        facts = FactService(
            backends,
            observers=(
                StoreBlacklistRemovals(backends),  # R5: a store's blacklisting removes the consumer
                RecallNotices(backends),  # P4: facts that can earn a recall chance
            ),
        )
        gateway_pb2_grpc.add_GroupServiceServicer_to_server(GroupService(backends), server)
        gateway_pb2_grpc.add_FactServiceServicer_to_server(facts, server)
        public_push_pb2_grpc.add_PushServiceServicer_to_server(PushService(backends), server)
        operations_pb2_grpc.add_GroupOperationsServiceServicer_to_server(GroupOperations(backends), server)
        operations_pb2_grpc.add_DiscoveryServiceServicer_to_server(Discovery(backends, self.rules, self.clock), server)
        campaigns_pb2_grpc.add_CampaignServiceServicer_to_server(CampaignService(backends), server)
        return [service.full_name for service in PUBLIC_SERVICES]

    def loops(self) -> Sequence[Loop]:
        """The HTTP port, when configured: its calls go through this process's own gRPC port (ADR 0012)."""
        if self.http_socket is None:
            return ()
        host = self.settings.grpc_addr.rsplit(":", 1)[0]
        loopback = grpc.aio.insecure_channel(f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{self.port}")
        self.channels.append(loopback)
        front = with_cors(HttpFront(loopback, PUBLIC_SERVICES), self.config.cors_origins)
        return (http_loop(front, self.http_socket, self.settings.grace_seconds),)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        if self.http_socket is not None:
            self.http_socket.close()
