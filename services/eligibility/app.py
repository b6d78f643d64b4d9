"""The eligibility process: its servicer on the shared server runtime."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from qun.eligibility.v1 import eligibility_pb2, eligibility_pb2_grpc
from services.common.server import DatabaseApp
from services.eligibility.old_fans import ensure_counted
from services.eligibility.servicer import EligibilityServiceServicer


class EligibilityApp(DatabaseApp):
    name = "eligibility"

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        await ensure_counted(self.db, self.rules)  # P3's stored counts, on this rules file's basis
        servicer = EligibilityServiceServicer(self.db, self.rules, self.clock)
        eligibility_pb2_grpc.add_EligibilityServiceServicer_to_server(servicer, server)
        return [eligibility_pb2.DESCRIPTOR.services_by_name["EligibilityService"].full_name]
