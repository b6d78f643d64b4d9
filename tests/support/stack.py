"""The whole platform as real processes, and a gateway client that speaks as any principal."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc

from cli.stack import Stack
from gateway.auth import Principal, Role, mint_token
from qun.common.v1 import facts_pb2
from qun.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.clock import FileClock
from services.common.processes import BACKENDS
from tests.support import postgres

START = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
TEST_POOL_SIZE = 4  # each process's PostgreSQL pool (QUN_DB_POOL_SIZE)


@dataclass
class RunningStack:
    stack: Stack
    clock_file: Path
    now: datetime

    def set_time(self, when: datetime) -> None:
        """Moves the time every process of the stack sees."""
        self.now = when
        FileClock.write(self.clock_file, when)

    def client(self) -> GatewayClient:
        return GatewayClient(self.stack.gateway.address, self.stack.secrets["QUN_TOKEN_SECRET"])


@contextlib.contextmanager
def running_stack(
    tmp: Path, database: str = "sqlite", extra_env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """Starts every process (on SQLite files, or fresh PostgreSQL databases) and stops them after."""
    clock_file = tmp / "clock"
    FileClock.write(clock_file, START)
    with contextlib.ExitStack() as cleanup:
        urls: dict[str, str] = {}
        if database == "postgres":
            urls = {name: cleanup.enter_context(postgres.fresh_database(name)) for name in BACKENDS}
        stack = Stack(
            tmp / "data",
            database_urls=urls,
            fixed_ports=False,
            extra_env={
                "QUN_CLOCK_FILE": str(clock_file),
                "QUN_LOG_LEVEL": "INFO",
                # Two stacks of four databases run at once (pytest's workers) within PostgreSQL's 100 connections.
                "QUN_DB_POOL_SIZE": str(TEST_POOL_SIZE),
                **(extra_env or {}),
            },
        )
        stack.start()
        try:
            yield RunningStack(stack, clock_file, START)
        finally:
            codes = stack.stop()
            assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class GatewayClient:
    def __init__(self, address: str, secret: str) -> None:
        self.address = address
        self.secret = secret
        self.channel = grpc.aio.insecure_channel(address)
        self.groups = gateway_pb2_grpc.GroupServiceStub(self.channel)
        self.facts = gateway_pb2_grpc.FactServiceStub(self.channel)

    def auth(self, principal: Principal) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {mint_token(self.secret, principal)}"),)

    @staticmethod
    def consumer(consumer_id: str) -> Principal:
        return Principal(consumer_id, Role.CONSUMER)

    @staticmethod
    def main_account(account_id: str, store_id: str) -> Principal:
        return Principal(account_id, Role.STORE_MAIN, store_id)

    async def report(self, facts: list[facts_pb2.Fact]) -> None:
        await self.facts.ReportFacts(
            gateway_pb2.ReportFactsRequest(facts=facts),
            metadata=self.auth(Principal("upstream-test", Role.UPSTREAM)),
            timeout=10,
        )

    async def close(self) -> None:
        await self.channel.close()
