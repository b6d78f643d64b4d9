"""The groups process: the shared database-backed server with the groups servicers and jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import grpc

from qun.groups.v1 import groups_pb2, groups_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc
from services.common.server import DatabaseApp
from services.groups.jobs import Jobs
from services.groups.lifecycle_servicer import GroupLifecycleServicer
from services.groups.servicer import GroupsServiceServicer


class GroupsApp(DatabaseApp):
    name = "groups"
    scheduler: asyncio.Task[None] | None = None

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        jobs = Jobs(self.db, self.rules, self.clock)
        groups_pb2_grpc.add_GroupsServiceServicer_to_server(
            GroupsServiceServicer(self.db, self.rules, self.clock), server
        )
        lifecycle_pb2_grpc.add_GroupLifecycleServiceServicer_to_server(
            GroupLifecycleServicer(self.db, self.rules, self.clock, jobs), server
        )
        if self.settings.job_interval_seconds > 0:
            self.scheduler = asyncio.create_task(jobs.loop(self.settings.job_interval_seconds))
        return [
            groups_pb2.DESCRIPTOR.services_by_name["GroupsService"].full_name,
            lifecycle_pb2.DESCRIPTOR.services_by_name["GroupLifecycleService"].full_name,
        ]

    async def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.scheduler
        await super().close()
