"""Every qun process, its module and its default ports: the one list below ``cli/`` and ``deploy/``.

``make up`` (``cli.stack``), the deployment generator (``deploy.topology``),
each process's settings and the gateway's default backend addresses all read
it, so a new process is added here once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    module: str  # what ``python -m`` runs
    grpc_port: int  # default loopback ports
    metrics_port: int
    database: bool  # owns a database, migrated before it starts
    http_port: int = 0  # the gateway's JSON-over-HTTP port (Connect); 0: the process serves none

    @property
    def addr_env(self) -> str:
        """The variable that tells the gateway where this backend listens."""
        return f"QUN_{self.name.upper()}_ADDR"

    @property
    def default_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


# Backends first, then the gateway: the order a stack starts them in.
PROCESS_SPECS: tuple[ProcessSpec, ...] = (
    ProcessSpec("eligibility", "services.eligibility", 50052, 9452, database=True),
    ProcessSpec("groups", "services.groups", 50053, 9453, database=True),
    ProcessSpec("campaigns", "services.campaigns", 50054, 9454, database=True),
    ProcessSpec("push", "services.push", 50055, 9455, database=True),
    ProcessSpec("gateway", "gateway", 50051, 9451, database=False, http_port=8080),
)
# Processes of the benchmark only (never deployed): the baseline echo service and the proxy before it.
BENCH_SPECS: tuple[ProcessSpec, ...] = (
    ProcessSpec("echo", "bench.echo", 50059, 9459, database=False),
    ProcessSpec("echo-proxy", "bench.echo", 50060, 9460, database=False),
)

PROCESSES: tuple[str, ...] = tuple(p.name for p in PROCESS_SPECS)
BACKENDS: tuple[str, ...] = tuple(p.name for p in PROCESS_SPECS if p.name != "gateway")
SERVICES_WITH_DATABASES: tuple[str, ...] = tuple(p.name for p in PROCESS_SPECS if p.database)
MODULES: dict[str, str] = {p.name: p.module for p in PROCESS_SPECS}
DEFAULT_PORTS: dict[str, tuple[int, int]] = {p.name: (p.grpc_port, p.metrics_port) for p in PROCESS_SPECS + BENCH_SPECS}


def spec(name: str) -> ProcessSpec:
    for process in PROCESS_SPECS + BENCH_SPECS:
        if process.name == name:
            return process
    raise KeyError(name)
