"""The campaigns process: the shared database-backed server, the campaigns servicer and the expiry loop."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from qun.campaigns.v1 import campaigns_pb2, campaigns_pb2_grpc
from services.campaigns.expiry import ExpiryJob
from services.campaigns.servicer import CampaignsServiceServicer
from services.common.loops import Loop
from services.common.server import DatabaseApp


class CampaignsApp(DatabaseApp):
    name = "campaigns"

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        self.expiry = ExpiryJob(self.db, self.rules, self.clock)
        campaigns_pb2_grpc.add_CampaignsServiceServicer_to_server(
            CampaignsServiceServicer(self.db, self.rules, self.clock, self.expiry), server
        )
        return [campaigns_pb2.DESCRIPTOR.services_by_name["CampaignsService"].full_name]

    def loops(self) -> Sequence[Loop]:
        """Every replica runs the expiry timer (QUN_JOB_INTERVAL_SECONDS; 0 turns it off, RunExpiry still works)."""
        interval = self.settings.job_interval_seconds
        return [self.expiry.loop(interval)] if interval > 0 else []
