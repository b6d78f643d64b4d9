"""The groups process: the shared database-backed server with the groups servicers and the jobs' schedule."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from qun.groups.v1 import groups_pb2, groups_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc
from services.common.loops import Loop
from services.common.server import DatabaseApp
from services.groups.jobs import Jobs
from services.groups.lifecycle_servicer import GroupLifecycleServicer
from services.groups.servicer import GroupsServiceServicer


class GroupsApp(DatabaseApp):
    name = "groups"

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        self.jobs = Jobs(self.db, self.rules, self.clock)
        groups_pb2_grpc.add_GroupsServiceServicer_to_server(
            GroupsServiceServicer(self.db, self.rules, self.clock), server
        )
        lifecycle_pb2_grpc.add_GroupLifecycleServiceServicer_to_server(
            GroupLifecycleServicer(self.db, self.rules, self.clock, self.jobs), server
        )
        return [
            groups_pb2.DESCRIPTOR.services_by_name["GroupsService"].full_name,
            lifecycle_pb2.DESCRIPTOR.services_by_name["GroupLifecycleService"].full_name,
        ]

    def loops(self) -> Sequence[Loop]:
        """Every replica runs the schedule (QUN_JOB_INTERVAL_SECONDS; 0 turns it off, RunJob still works)."""
        interval = self.settings.job_interval_seconds
        return [self.jobs.loop(interval)] if interval > 0 else []
