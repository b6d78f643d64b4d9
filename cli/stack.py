"""All qun processes on loopback, as ``make up`` and the flow tests run them.

Starts the gateway, migrates each service's database and starts each backend
once its database is ready, all as separate processes; waits until every one reports SERVING on the standard
health service, and stops them all with SIGTERM (the processes drain and exit).

Each process is started so that it dies with the supervisor (``PR_SET_PDEATHSIG`` on Linux): a
supervisor killed outright, or a closed terminal, leaves no process holding a port. A stack
started by ``qunctl up`` records itself in ``<data>/stack.json`` (supervisor, processes,
endpoints), which ``qunctl down`` and ``qunctl``'s default gateway address read.

Kept as one module (about 470 lines): the supervisor of the local stack (start, wait for
SERVING, stop in order, ``make down``), whose parts share its state file and process table.
"""

from __future__ import annotations

import json
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
STATE_FILE = "stack.json"
PORT_BASE_ENV = "QUN_PORT_BASE"
# With a port base B: process i of PROCESSES listens for gRPC on B + its default offset (the gateway
# B+1, the backends B+2 …) and serves /metrics on B+11, B+12 …; a local Prometheus on B+9.
DEFAULT_PORT_BASE = 50050
METRICS_OFFSET = 10
PROMETHEUS_OFFSET = 9
HTTP_OFFSET = 8  # the gateway's JSON-over-HTTP (Connect) port: B+8
DEFAULT_PROMETHEUS_PORT = 9090
# What the stack decides for each process; every other QUN_* variable of the caller's environment
# is passed through to every process (log level, rules file, clock file, job interval …).
STACK_OWNED_ENV = frozenset(
    {
        "QUN_DATA_DIR",
        "QUN_GRPC_PORT",
        "QUN_METRICS_PORT",
        "QUN_HTTP_PORT",
        "QUN_DATABASE_URL",
        "QUN_INTERNAL_TOKEN",
        "QUN_TOKEN_SECRET",
        PORT_BASE_ENV,
        "QUN_GATEWAY_ADDR",
        *(spec(backend).addr_env for backend in BACKENDS),
    }
)
# Started as each process's first code: it asks Linux to SIGTERM it when the supervisor dies,
# checks the supervisor is still there, then becomes the program (same pid, e.g. ``python -m gateway``).
DIE_WITH_SUPERVISOR = """
import os, signal, sys
if sys.platform == "linux":
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):
        sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def dying_with_this_process(argv: list[str]) -> list[str]:
    """``argv`` started so that it gets SIGTERM when this process dies, however it dies."""
    return [sys.executable, "-c", DIE_WITH_SUPERVISOR, str(os.getpid()), *argv]


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


def port_base(value: str | int | None) -> int | None:
    """A port base from ``QUN_PORT_BASE`` or ``--port-base``; None for the documented default ports."""
    if value is None or value == "":
        return None
    try:
        base = int(value)
    except ValueError:
        raise ValueError(f"{PORT_BASE_ENV} must be an integer, got {value!r}") from None
    highest = max(METRICS_OFFSET + len(PROCESSES), PROMETHEUS_OFFSET)
    if not 1024 <= base <= 65535 - highest:
        raise ValueError(f"{PORT_BASE_ENV} must be between 1024 and {65535 - highest}, got {base}")
    return base


def ports_for(base: int | None) -> dict[str, tuple[int, int]]:
    """(gRPC, metrics) port of each process: the documented defaults, or moved to ``base``."""
    if base is None:
        return {name: DEFAULT_PORTS[name] for name in PROCESSES}
    return {
        name: (base + grpc_port - DEFAULT_PORT_BASE, base + METRICS_OFFSET + grpc_port - DEFAULT_PORT_BASE)
        for name, (grpc_port, _) in ((name, DEFAULT_PORTS[name]) for name in PROCESSES)
    }


def http_port_for(base: int | None) -> int:
    """The gateway's HTTP port: its documented default, or moved to ``base``."""
    return spec("gateway").http_port if base is None else base + HTTP_OFFSET


def prometheus_port(base: int | None) -> int:
    return DEFAULT_PROMETHEUS_PORT if base is None else base + PROMETHEUS_OFFSET


def passed_through(environ: dict[str, str]) -> dict[str, str]:
    """The caller's QUN_* variables the stack hands to every process (all but the ones it owns)."""
    return {k: v for k, v in environ.items() if k.startswith("QUN_") and k not in STACK_OWNED_ENV}


def read_secrets(data_dir: Path) -> dict[str, str]:
    """The values in the data folder's secrets file; empty when there is none."""
    path = data_dir / SECRETS_FILE
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    return values


def load_or_create_secrets(data_dir: Path) -> dict[str, str]:
    """The internal credential and token key for a local stack, kept in the data folder."""
    path = data_dir / SECRETS_FILE
    values = read_secrets(data_dir)
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
    http_port: int = 0  # the gateway's JSON-over-HTTP (Connect) port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@dataclass
class Stack:
    data_dir: Path
    # Per-service database URLs; SQLite files in data_dir when absent.
    database_urls: dict[str, str] = field(default_factory=dict)
    # Fixed ports (make up: the defaults, or moved by ``port_base``) or free ones (tests).
    fixed_ports: bool = True
    port_base: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    log_to_files: bool = True
    # Each process dies with this one (``qunctl up``). Off for tests, which may start a process from
    # a worker thread: Linux delivers the signal when the *thread* that started it ends.
    die_with_supervisor: bool = False
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
        fixed = ports_for(self.port_base)
        for name in PROCESSES:
            if self.fixed_ports:
                grpc_port, metrics_port = fixed[name]
            else:
                grpc_port, metrics_port = free_port(), free_port()
            endpoints[name] = Endpoint(name, grpc_port, metrics_port)
        endpoints["gateway"].http_port = http_port_for(self.port_base) if self.fixed_ports else free_port()
        return endpoints

    @property
    def gateway(self) -> Endpoint:
        return self.endpoints["gateway"]

    def env_for(self, name: str) -> dict[str, str]:
        # Neither the caller's QUN_* (extra_env carries those meant for the processes) nor a
        # DATABASE_URL meant for something else: each service has its own database.
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUN_") and k != "DATABASE_URL"}
        env.update(self.secrets)
        env.update(
            QUN_DATA_DIR=str(self.data_dir),
            QUN_GRPC_PORT=str(self.endpoints[name].grpc_port),
            QUN_METRICS_PORT=str(self.endpoints[name].metrics_port),
            **{spec(backend).addr_env: self.endpoints[backend].address for backend in BACKENDS},
            PYTHONUNBUFFERED="1",
        )
        if name == "gateway":
            env["QUN_HTTP_PORT"] = str(self.gateway.http_port)
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
            dying_with_this_process([sys.executable, "-m", MODULES[name]])
            if self.die_with_supervisor
            else [sys.executable, "-m", MODULES[name]],
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
                said = self.last_words(name)
                raise failure(
                    f"{name} exited with {process.returncode} while starting"
                    + (f": {said}" if said else "")
                    + f"; see {self.log_hint(name)}"
                )
            try:
                tls = self.tls if name in BACKENDS else None  # the gateway's own port stays plaintext
                wait_serving(self.endpoints[name].address, min(1.0, max(0.1, deadline - time.monotonic())), tls)
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise

    def _output_since_start(self, name: str) -> str:
        log = self.data_dir / "logs" / f"{name}.log"
        if not self.log_to_files or not log.exists():
            return ""
        with log.open("rb") as output:
            output.seek(self._log_starts.get(name, 0))
            return output.read().decode(errors="replace")

    def _port_was_taken(self, name: str) -> bool:
        """Whether the process's output since it started says its port was taken."""
        said = self._output_since_start(name)
        return any(sign in said for sign in PORT_TAKEN_SIGNS)

    def last_words(self, name: str) -> str:
        """The last line a process wrote before it exited: a service's own one-line refusal
        (``<service>: QUN_… must be …``) or the last line of its traceback."""
        lines = [line.strip() for line in self._output_since_start(name).splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def state(self, prometheus_url: str = "") -> dict[str, object]:
        """What ``qunctl down`` and ``qunctl``'s default gateway need to know of a running stack."""
        return {
            "supervisor": os.getpid(),
            "processes": {name: process.pid for name, process in self.processes.items()},
            "gateway": self.gateway.address,
            "http": self.gateway.http_url,
            "port_base": self.port_base,
            "endpoints": {name: [e.grpc_port, e.metrics_port] for name, e in self.endpoints.items()},
            "prometheus": prometheus_url,
            # The clock file the processes read (QUN_CLOCK_FILE), for qunctl's "now".
            "clock_file": str(Path(clock).resolve()) if (clock := self.extra_env.get("QUN_CLOCK_FILE")) else "",
        }

    def write_state(self, prometheus_url: str = "") -> None:
        path = self.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(prometheus_url), indent=2) + "\n")
        os.replace(tmp, path)

    def forget_state(self) -> None:
        path = self.data_dir / STATE_FILE
        try:
            if json.loads(path.read_text()).get("supervisor") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass

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
        lines = [f"gateway  grpc://{self.gateway.address}  {self.gateway.http_url} (JSON over HTTP)"]
        for name in PROCESSES:
            endpoint = self.endpoints[name]
            lines.append(f"{name:<12} grpc {endpoint.address:<18} metrics {endpoint.metrics_url}")
        return "\n".join(lines)


def check_environment(name: str, env: dict[str, str]) -> str | None:
    """What process ``name`` would refuse to start with in ``env``, worded as the process words it
    (``<process>: <problem>``, services.common.server.main); None when it would start.

    Each process's own settings loaders are called, so the check is the process's, not a copy.
    """
    from services.common.clock import parse_instant
    from services.common.rules import RulesError, load_rules
    from services.common.settings import SettingsError, load_settings

    try:
        settings = load_settings(name, env)
        if name == "gateway":
            from gateway.settings import load_gateway_settings

            load_gateway_settings(settings, env)
        if name == "push":
            from services.push.app import dispatcher_settings

            dispatcher_settings(env)
        load_rules(env=env)
        if settings.clock_file and Path(settings.clock_file).exists():
            try:
                parse_instant(Path(settings.clock_file).read_text().strip())
            except (OSError, ValueError) as error:
                raise SettingsError(
                    f"QUN_CLOCK_FILE {settings.clock_file} holds no ISO-8601 instant: {error}"
                ) from None
    except (SettingsError, RulesError) as error:
        return f"{name}: {error}"
    return None


def read_state(data_dir: Path) -> dict[str, object] | None:
    """The state a running ``qunctl up`` wrote in ``data_dir``; None when none is running from there."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    supervisor = state.get("supervisor")
    if not isinstance(supervisor, int) or not is_stack_supervisor(supervisor):
        return None
    return dict(state)


def is_stack_supervisor(pid: int) -> bool:
    """Whether ``pid`` is alive and is a ``qunctl up`` (a recycled pid is some other program)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc: alive is the best we know
    return b"up" in words and any(word.endswith((b"cli", b"qunctl")) for word in words)
