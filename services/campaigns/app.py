"""The campaigns process: the shared database-backed server, the campaigns servicer and the expiry timer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import grpc

from qun.campaigns.v1 import campaigns_pb2, campaigns_pb2_grpc
from services.campaigns.expiry import ExpiryJob
from services.campaigns.servicer import CampaignsServiceServicer
from services.common.server import DatabaseApp


class CampaignsApp(DatabaseApp):
    name = "campaigns"
    timer: asyncio.Task[None] | None = None

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        expiry = ExpiryJob(self.db, self.rules, self.clock)
        campaigns_pb2_grpc.add_CampaignsServiceServicer_to_server(
            CampaignsServiceServicer(self.db, self.rules, self.clock, expiry), server
        )
        # Every replica runs the timer (QUN_JOB_INTERVAL_SECONDS; 0 turns it off, RunExpiry still works).
        if self.settings.job_interval_seconds > 0:
            self.timer = asyncio.create_task(expiry.run_every(self.settings.job_interval_seconds))
        return [campaigns_pb2.DESCRIPTOR.services_by_name["CampaignsService"].full_name]

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.timer
        await super().close()
