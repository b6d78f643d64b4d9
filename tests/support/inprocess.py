"""A backend service served in the test's own event loop over a real loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from services.common.client import internal_channel
from services.common.clock import Clock
from services.common.migrations import upgrade
from services.common.rules import Rules
from services.common.server import Server, ServiceApp
from services.common.settings import Settings, async_url

INTERNAL_TOKEN = "test-internal-token-0123456789"


def settings_for(service: str, database_url: str = "") -> Settings:
    return Settings(
        service=service,
        grpc_addr="127.0.0.1:0",
        metrics_addr="127.0.0.1",
        metrics_port=0,
        database_url=async_url(database_url) if database_url else "",
        internal_token=INTERNAL_TOKEN,
        grace_seconds=0.2,
        job_interval_seconds=0,
        log_level="INFO",
        clock_file="",
    )


async def migrate(service: str, database_url: str) -> None:
    await asyncio.to_thread(upgrade, service, async_url(database_url))


@asynccontextmanager
async def serve(
    app_type: type[ServiceApp],
    database_url: str = "",
    *,
    rules: Rules | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[grpc.aio.Channel]:
    """Migrates (when the app has a database), serves, yields a credentialed channel."""
    if database_url:
        await migrate(app_type.name, database_url)
    server = Server(app_type(settings_for(app_type.name, database_url), rules, clock), serve_metrics_http=False)
    port = await server.start()
    channel = internal_channel(f"127.0.0.1:{port}", INTERNAL_TOKEN)
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop()
