"""The grpc.aio server every qun process runs.

A ``ServiceApp`` says what a process serves and which background loops it
runs; ``Server`` gives it the interceptor chain, health (NOT_SERVING while
starting and draining), reflection, /metrics, its loops (started once
SERVING), and SIGTERM → drain calls and stop loops → stop, within a grace
period.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import tracing
from services.common.clock import Clock, clock_from_env
from services.common.interceptors import (
    ErrorInterceptor,
    Interceptor,
    InternalAuthInterceptor,
    LoggingInterceptor,
    MetricsInterceptor,
)
from services.common.logs import configure_logging
from services.common.loops import Loop, Loops
from services.common.metrics import serve_metrics
from services.common.rules import Rules, load_rules
from services.common.settings import Settings
from services.common.tls import TlsFiles

log = logging.getLogger("qun.server")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


class ServiceApp:
    """What one process serves. Subclasses register their servicers in ``open``."""

    name: str = ""
    # Whether each answer's metadata names its request id and trace id (the public API: the gateway).
    answer_ids: bool = False

    def __init__(self, settings: Settings, rules: Rules | None = None, clock: Clock | None = None) -> None:
        self.settings = settings
        # The gRPC port once bound (``Server.start`` sets it before the loops start).
        self.port = 0
        self.rules = rules or load_rules()
        self.clock = clock or clock_from_env({"QUN_CLOCK_FILE": settings.clock_file})

    def auth_interceptor(self) -> Interceptor:
        return InternalAuthInterceptor(self.settings.internal_token)

    def tls(self) -> TlsFiles | None:
        """A backend's port is served over TLS with client certificates when the files are configured."""
        return self.settings.tls

    def guard_interceptors(self) -> Sequence[Interceptor]:
        """Run after authentication, before the error interceptor (the gateway's rate limit)."""
        return ()

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        """Registers servicers; returns their full service names."""
        raise NotImplementedError

    def loops(self) -> Sequence[Loop]:
        """The background loops to run while serving (after ``open``); the runtime starts and stops them."""
        return ()

    async def check_ready(self) -> None:
        """Raises while a dependency (the database) is unreachable."""

    async def close(self) -> None:
        """Releases what ``open`` acquired, after the server and the loops stopped."""


class DatabaseApp(ServiceApp):
    """A backend service with its own database."""

    def __init__(self, settings: Settings, rules: Rules | None = None, clock: Clock | None = None) -> None:
        # Imported here: the gateway, which has no database, then starts without loading SQLAlchemy.
        from services.common.db import Database

        super().__init__(settings, rules, clock)
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)

    async def check_ready(self) -> None:
        await self.db.ping()

    async def close(self) -> None:
        await self.db.close()


class Server:
    def __init__(self, app: ServiceApp, *, serve_metrics_http: bool = True) -> None:
        self.app = app
        self.settings = app.settings
        self.serve_metrics_http = serve_metrics_http
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[
                MetricsInterceptor(),
                LoggingInterceptor(answer_ids=app.answer_ids),
                app.auth_interceptor(),
                *app.guard_interceptors(),
                ErrorInterceptor(),
            ],
            options=SERVER_OPTIONS,
        )
        self.port = 0
        self.metrics_port = 0
        self.service_names: list[str] = []
        self.loops = Loops()

    async def start(self) -> int:
        """Binds, starts, and reports SERVING once the app is ready; returns the port."""
        names = list(await self.app.open(self.server))
        self.service_names = names
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        tls = self.app.tls()
        if tls is None:
            self.port = self.server.add_insecure_port(self.settings.grpc_addr)
        else:
            self.port = self.server.add_secure_port(self.settings.grpc_addr, tls.server_credentials())
        if self.serve_metrics_http:
            self.metrics_port = serve_metrics(self.settings.metrics_addr, self.settings.metrics_port)
        await self.server.start()
        await self.app.check_ready()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        self.app.port = self.port
        self.loops.start(self.app.loops())
        log.info(
            "serving",
            extra={
                "fields": {
                    "grpc": f"{self.settings.grpc_addr.rsplit(':', 1)[0]}:{self.port}",
                    "metrics_port": self.metrics_port,
                    "services": names,
                }
            },
        )
        return self.port

    async def stop(self) -> None:
        """Drain: NOT_SERVING first so balancers move away; calls and loops then get the grace period together."""
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        grace = self.settings.grace_seconds
        await asyncio.gather(self.server.stop(grace), self.loops.stop(grace))
        await self.app.close()
        log.info("stopped")

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("draining", extra={"fields": {"grace_seconds": self.settings.grace_seconds}})
        await self.stop()


def run(app_type: type[ServiceApp], settings: Settings) -> None:
    """Entry point of a service process."""
    configure_logging(settings.service, settings.log_level)
    try:
        tracing.configure_tracing(settings.service, os.environ)
    except ValueError as error:
        raise SystemExit(f"{settings.service}: {error}") from None
    rules = load_rules()
    log.info("rules loaded", extra={"fields": {"rules": json.loads(json.dumps(rules.as_dict()))}})

    async def serve() -> None:
        # grpc.aio binds its server to the loop running when it is built: build it inside asyncio.run.
        try:
            await Server(app_type(settings, rules)).run_until_signalled()
        finally:
            tracing.shutdown()

    asyncio.run(serve())


def main(app_type: type[ServiceApp]) -> None:
    """``python -m services.<name>``: settings from the environment, then serve."""
    from services.common.settings import SettingsError, load_settings

    try:
        settings = load_settings(app_type.name)
    except SettingsError as error:
        raise SystemExit(f"{app_type.name}: {error}") from None
    run(app_type, settings)
