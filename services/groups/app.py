"""The groups process: the shared database-backed server with the groups servicer."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from qun.groups.v1 import groups_pb2, groups_pb2_grpc
from services.common.server import DatabaseApp
from services.groups.servicer import GroupsServiceServicer


class GroupsApp(DatabaseApp):
    name = "groups"

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        groups_pb2_grpc.add_GroupsServiceServicer_to_server(
            GroupsServiceServicer(self.db, self.rules, self.clock), server
        )
        return [groups_pb2.DESCRIPTOR.services_by_name["GroupsService"].full_name]
