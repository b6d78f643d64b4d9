"""Every qun process as it is deployed, read from the code rather than repeated.

The process list, module names, default ports and which services own a
database come from ``services.common.processes`` (what ``make up`` runs too).
A new service added there is deployed by ``make deploy-render`` without a
line here; ``TUNING`` only changes defaults such as replica counts and
resources.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from services.common.processes import BACKENDS, PROCESS_SPECS, ProcessSpec

IMAGE = "qun"
IMAGE_TAG = "dev"
NAME_PREFIX = "qun-"  # Kubernetes object names: qun-gateway, qun-groups …
SECRET_NAME = "qun-secrets"  # Kubernetes Secret the Deployments and Jobs reference
RULES_CONFIGMAP = "qun-rules"
RULES_MOUNT = "/etc/qun"
RULES_FILE = f"{RULES_MOUNT}/rules.toml"
GRACE_SECONDS = 5
LISTEN_HOST = "0.0.0.0"
INTERNAL_TOKEN_ENV = "QUN_INTERNAL_TOKEN"
TOKEN_SECRET_ENV = "QUN_TOKEN_SECRET"


@dataclass(frozen=True)
class Process(ProcessSpec):
    """A process as ``services.common.processes`` lists it, with what its deployment adds."""

    backend: bool = True  # reached only through the gateway
    min_replicas: int = 2
    max_replicas: int = 6
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"
    target_cpu_percent: int = 70

    @property
    def k8s_name(self) -> str:
        return NAME_PREFIX + self.name

    @property
    def database_name(self) -> str:
        return f"qun_{self.name}"

    @property
    def database_secret_key(self) -> str:
        return f"{self.name}-database-url"


# Deployment defaults that differ per process; everything else is in Process.
TUNING: dict[str, dict[str, object]] = {
    "gateway": {"max_replicas": 10},
}


def processes() -> list[Process]:
    """Backends first, then the gateway: the order ``make up`` starts them in."""
    return [
        Process(**asdict(spec), backend=spec.name in BACKENDS, **TUNING.get(spec.name, {}))  # type: ignore[arg-type]  # TUNING names Process fields
        for spec in PROCESS_SPECS
    ]


def by_name() -> dict[str, Process]:
    return {process.name: process for process in processes()}
