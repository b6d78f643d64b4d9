"""All qun processes on loopback, as ``make up`` and the flow tests run them.

Starts the gateway, migrates each service's database and starts each backend
once its database is ready, all as separate processes; waits until every one reports SERVING on the standard
health service, and stops them all with SIGTERM (the processes drain and exit).
"""

from __future__ import annotations

import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.processes import BACKENDS, DEFAULT_PORTS, MODULES, PROCESSES, spec
from services.common.settings import database_url
from services.common.tls import TlsFiles, tls_from_env

SECRETS_FILE = "secrets.env"
START_TIMEOUT_SECONDS = 30.0
PORT_ATTEMPTS = 3
# What a process logs when its port was taken: the metrics server's OSError, gRPC's bind failure.
PORT_TAKEN_SIGNS = ("Address already in use", "Failed to add port", "Address in use")
STOP_TIMEOUT_SECONDS = 10.0


class PortTaken(RuntimeError):
    """A process could not bind the port it was given."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_or_create_secrets(data_dir: Path) -> dict[str, str]:
    """The internal credential and token key for a local stack, kept in the data folder."""
    path = data_dir / SECRETS_FILE
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    changed = False
    for key in ("QUN_INTERNAL_TOKEN", "QUN_TOKEN_SECRET"):
        if len(values.get(key, "")) < 32:
            values[key] = secrets.token_urlsafe(32)
            changed = True
    if changed:
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(0o600)
    return values


def wait_serving(address: str, timeout: float, tls: TlsFiles | None = None) -> None:
    """Until the process at ``address`` reports SERVING (asked over TLS with ``tls``: a backend serving so)."""
    deadline = time.monotonic() + timeout
    last_error = "not started"
    channel = (
        grpc.insecure_channel(address)
        if tls is None
        else grpc.secure_channel(address, tls.channel_credentials(), options=tls.channel_options())
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as error:
                last_error = error.code().name
            time.sleep(0.05)
    raise TimeoutError(f"{address} not SERVING after {timeout:.0f}s ({last_error})")


@dataclass
class Endpoint:
    name: str
    grpc_port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@dataclass
class Stack:
    data_dir: Path
    # Per-service database URLs; SQLite files in data_dir when absent.
    database_urls: dict[str, str] = field(default_factory=dict)
    # Fixed default ports (make up) or free ones (tests).
    fixed_ports: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    log_to_files: bool = True
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _log_starts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        # Gateway ↔ backend over TLS when the extra environment names the files (services.common.tls).
        self.tls = tls_from_env(self.extra_env)
        self.secrets = load_or_create_secrets(self.data_dir)
        self.endpoints = self._pick_endpoints()

    def _pick_endpoints(self) -> dict[str, Endpoint]:
        endpoints = {}
        for name in PROCESSES:
            if self.fixed_ports:
                grpc_port, metrics_port = DEFAULT_PORTS[name]
            else:
                grpc_port, metrics_port = free_port(), free_port()
            endpoints[name] = Endpoint(name, grpc_port, metrics_port)
        return endpoints

    @property
    def gateway(self) -> Endpoint:
        return self.endpoints["gateway"]

    def env_for(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUN_")}
        env.update(self.secrets)
        env.update(
            QUN_DATA_DIR=str(self.data_dir),
            QUN_GRPC_PORT=str(self.endpoints[name].grpc_port),
            QUN_METRICS_PORT=str(self.endpoints[name].metrics_port),
            **{spec(backend).addr_env: self.endpoints[backend].address for backend in BACKENDS},
            PYTHONUNBUFFERED="1",
        )
        if name in self.database_urls:
            env["QUN_DATABASE_URL"] = self.database_urls[name]
        env.update(self.extra_env)
        return env

    def _migrate_in_turn(self, done: queue.Queue[tuple[str, BaseException | None]]) -> None:
        """Each service's database to its newest schema, one after another, reporting each.

        In this process, on a thread of its own: one interpreter loading Alembic
        once costs far less than a process per service, and the processes
        started meanwhile use the other core (Alembic is imported here, on that thread,
        for the same reason).
        """
        from services.common.migrations import upgrade

        for name in BACKENDS:
            try:
                upgrade(name, database_url(self.env_for(name), name))
            except BaseException as error:  # reported to start(), which stops everything
                done.put((name, error))
                return
            done.put((name, None))

    def start_process(self, name: str) -> None:
        if self.log_to_files:
            logs = self.data_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
            self._log_starts[name] = out.tell()
        else:
            out = None
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", MODULES[name]],
            env=self.env_for(name),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them in order
        )
        if out is not None:
            out.close()

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Every process as soon as it can start: the gateway (no schema) at once, each backend
        when its database is migrated; then waits until all are SERVING.

        A free port is only free until a process binds it, and another program may take it
        first: a stack on free ports then starts again on new ones.
        """
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start(timeout)
                return
            except PortTaken:
                if self.fixed_ports or attempt == PORT_ATTEMPTS:
                    raise
                self.endpoints = self._pick_endpoints()

    def _start(self, timeout: float) -> None:
        migrated: queue.Queue[tuple[str, BaseException | None]] = queue.Queue()
        try:
            self.start_process("gateway")
            threading.Thread(target=self._migrate_in_turn, args=(migrated,), daemon=True).start()
            for _ in BACKENDS:
                name, error = migrated.get(timeout=timeout)
                if error is not None:
                    raise RuntimeError(f"migrations failed for {name}: {error}") from error
                self.start_process(name)
            for name in PROCESSES:
                self.wait(name, timeout)
        except BaseException:
            self.stop()
            self.processes.clear()
            raise

    def wait(self, name: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
        process = self.processes[name]
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                failure = PortTaken if self._port_was_taken(name) else RuntimeError
                raise failure(f"{name} exited with {process.returncode} while starting; see {self.log_hint(name)}")
            try:
                tls = self.tls if name in BACKENDS else None  # the gateway's own port stays plaintext
                wait_serving(self.endpoints[name].address, min(1.0, max(0.1, deadline - time.monotonic())), tls)
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise

    def _port_was_taken(self, name: str) -> bool:
        """Whether the process's output since it started says its port was taken."""
        log = self.data_dir / "logs" / f"{name}.log"
        if not self.log_to_files or not log.exists():
            return False
        with log.open("rb") as output:
            output.seek(self._log_starts.get(name, 0))
            said = output.read().decode(errors="replace")
        return any(sign in said for sign in PORT_TAKEN_SIGNS)

    def log_hint(self, name: str) -> str:
        return str(self.data_dir / "logs" / f"{name}.log") if self.log_to_files else "its output"

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> int | None:
        process = self.processes.pop(name, None)
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def stop(self) -> dict[str, int | None]:
        """Gateway first, so nothing new reaches the backends while they drain."""
        return {name: self.stop_process(name) for name in reversed(PROCESSES) if name in self.processes}

    def describe(self) -> str:
        lines = [f"gateway  grpc://{self.gateway.address}"]
        for name in PROCESSES:
            endpoint = self.endpoints[name]
            lines.append(f"{name:<12} grpc {endpoint.address:<18} metrics {endpoint.metrics_url}")
        return "\n".join(lines)
