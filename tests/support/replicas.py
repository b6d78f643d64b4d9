"""Several real processes of one backend service on one database, as replicas run in production.

The concurrency tests start them, hammer them over gRPC, kill and restart
them; this module is the one place that knows how.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.stack import free_port
from tests.support.inprocess import INTERNAL_TOKEN, migrate

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30.0


@dataclass
class Replica:
    service: str
    index: int
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    peaks_mb: list[float] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.service}"], cwd=REPO_ROOT, env=self.env, stdout=out, stderr=out
            )

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup — a crash."""
        assert self.process is not None
        self.peaks_mb.append(self.peak_rss_mb())
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        """SIGTERM: the graceful stop; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    async def wait_serving(self) -> None:
        deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    pytest.fail(f"{self.service} exited with {self.process.returncode}: {self.log.read_text()}")
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    pytest.fail(f"{self.service} not SERVING after {STARTUP_SECONDS}s: {self.log.read_text()}")
                await asyncio.sleep(0.1)


@contextmanager
def replicas(
    service: str, database_url: str, tmp_path: Path, *, count: int = 2, env: dict[str, str] | None = None
) -> Iterator[list[Replica]]:
    """Migrates the database, starts ``count`` processes of ``service`` on it, kills what is left after."""
    asyncio.run(migrate(service, database_url))
    started: list[Replica] = []
    try:
        for i in range(count):
            port = free_port()
            process_env = {k: v for k, v in os.environ.items() if k not in ("QUN_RULES_FILE", "QUN_CLOCK_FILE")}
            process_env.update(
                QUN_DATABASE_URL=database_url,
                QUN_GRPC_PORT=str(port),
                QUN_METRICS_PORT=str(free_port()),
                QUN_HTTP_PORT=str(free_port()),  # a gateway replica's HTTP port (backends have none)
                QUN_INTERNAL_TOKEN=INTERNAL_TOKEN,
                QUN_LOG_LEVEL="WARNING",
                QUN_GRACE_SECONDS="2",
                **(env or {}),
            )
            replica = Replica(service, i, port, process_env, tmp_path / f"{service}-{i}.log")
            replica.start()
            started.append(replica)
        yield started
    finally:
        for replica in started:
            if replica.process is not None and replica.process.poll() is None:
                replica.process.kill()
                replica.process.wait(10)
