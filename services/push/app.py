"""The push process: its servicer on the shared server runtime, and the dispatcher loop."""

from __future__ import annotations

import os
from collections.abc import Sequence

import grpc

from qun.push.v1 import push_pb2, push_pb2_grpc
from services.common.loops import Loop
from services.common.server import DatabaseApp
from services.common.settings import SettingsError, float_setting, int_setting
from services.push.dispatcher import Dispatcher
from services.push.servicer import PushServiceServicer

BATCH_ENV = "QUN_PUSH_DISPATCH_BATCH"
POLL_ENV = "QUN_PUSH_DISPATCH_POLL_SECONDS"
ENABLED_ENV = "QUN_PUSH_DISPATCHER"


def dispatcher_settings(env: dict[str, str] | None = None) -> tuple[bool, int, float]:
    """Whether this replica dispatches, deliveries per batch, the idle poll interval; validated at start."""
    env = dict(os.environ) if env is None else env
    enabled = env.get(ENABLED_ENV, "on").lower()
    if enabled not in {"on", "off"}:
        raise SettingsError(f"{ENABLED_ENV} must be on or off, got {enabled!r}")
    batch = int_setting(env, BATCH_ENV, 2000, 1, 20_000)
    poll = float_setting(env, POLL_ENV, 0.5)
    if not 0 < poll <= 60:
        raise SettingsError(f"{POLL_ENV} must be between 0 and 60 seconds, got {poll}")
    return enabled == "on", batch, poll


class PushApp(DatabaseApp):
    name = "push"

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        push_pb2_grpc.add_PushServiceServicer_to_server(PushServiceServicer(self.db, self.rules, self.clock), server)
        enabled, batch, poll = dispatcher_settings()
        self.dispatcher = Dispatcher(
            self.db, self.rules.push, self.rules.calendar.market, self.clock, batch_size=batch, poll_seconds=poll
        )
        self.dispatching = enabled
        return [push_pb2.DESCRIPTOR.services_by_name["PushService"].full_name]

    def loops(self) -> Sequence[Loop]:
        """The dispatcher, unless this replica was started with QUN_PUSH_DISPATCHER=off."""
        return [self.dispatcher.loop()] if self.dispatching else []
