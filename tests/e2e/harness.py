"""What the end-to-end suite needs around a deployment: where it is, tokens, a Prometheus.

The suite is black-box: it speaks to the gateway over the public API
(``qun.gateway.v1``) with bearer tokens it signs itself, and reads metrics
through Prometheus's HTTP API. Where the deployment is comes from the
environment; without it the suite starts the local stack itself.

    QUN_E2E_GATEWAY          host:port of a running gateway (compose, Kubernetes …)
    QUN_E2E_TOKEN_SECRET     that deployment's token key (QUN_TOKEN_SECRET)
    QUN_E2E_METRICS_TARGETS  process=host:port,… of its /metrics endpoints (a process named
                             again for each of its replicas): the suite starts its own
                             Prometheus scraping them, with deploy/prometheus/rules.yml
    QUN_E2E_PROMETHEUS_URL   or: the deployment's Prometheus (e.g. http://127.0.0.1:9090)
    QUN_E2E_HTTP             the gateway's JSON-over-HTTP base URL (e.g. http://127.0.0.1:8080)
    QUN_E2E_WAIT_SECONDS     how long to wait for scrapes to show the traffic (default 30, or
                             120 with the deployment's own Prometheus)
    QUN_E2E_RATE_INTERVAL    the window put in for Grafana's $__rate_interval (default 1m)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "dashboards" / "qun.json"
LOCAL_SCRAPE_INTERVAL = "1s"


class Unconfigured(Exception):
    """The environment names a deployment only in part."""


@dataclass
class Deployment:
    gateway: str
    token_secret: str
    # Process name → the /metrics host:port of each replica, when known (the local stack,
    # QUN_E2E_METRICS_TARGETS).
    metrics_targets: dict[str, list[str]] = field(default_factory=dict)
    prometheus_url: str = ""
    local: bool = False
    description: str = ""
    # The gateway's JSON-over-HTTP (Connect) base URL, e.g. http://127.0.0.1:8080.
    http_url: str = ""

    def token(self, subject: str, role: str, store: str = "", ttl_seconds: int = 600) -> str:
        """An HS256 bearer token as the gateway expects it (issuer "qun")."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": "qun", "sub": subject, "role": role, "iat": now, "exp": now + ttl_seconds}
        if store:
            claims["store"] = store
        return jwt.encode(claims, self.token_secret, algorithm="HS256")


def from_environment(env: dict[str, str] | None = None) -> Deployment | None:
    """The deployment the environment names, or None for "start the local stack"."""
    env = dict(os.environ) if env is None else env
    gateway = env.get("QUN_E2E_GATEWAY", "")
    if not gateway:
        return None
    secret = env.get("QUN_E2E_TOKEN_SECRET", "")
    if not secret:
        raise Unconfigured("QUN_E2E_GATEWAY is set: set QUN_E2E_TOKEN_SECRET to that deployment's QUN_TOKEN_SECRET")
    targets: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in env.get("QUN_E2E_METRICS_TARGETS", "").split(","))):
        name, sep, address = item.partition("=")
        if not sep or ":" not in address:
            raise Unconfigured(f"QUN_E2E_METRICS_TARGETS: expected process=host:port, got {item!r}")
        targets.setdefault(name.strip(), []).append(address.strip())
    prometheus_url = env.get("QUN_E2E_PROMETHEUS_URL", "").rstrip("/")
    if not targets and not prometheus_url:
        raise Unconfigured("set QUN_E2E_METRICS_TARGETS (process=host:port,…) or QUN_E2E_PROMETHEUS_URL")
    return Deployment(
        gateway,
        secret,
        targets,
        prometheus_url,
        local=False,
        description=f"gateway {gateway}",
        http_url=env.get("QUN_E2E_HTTP", "").rstrip("/"),
    )


@contextlib.contextmanager
def local_deployment(tmp: Path) -> Iterator[Deployment]:
    """Every process of ``make up`` on free ports, on fresh PostgreSQL databases when the server
    is reachable (REQUIRE_POSTGRES=1 makes an unreachable one a failure), else on SQLite."""
    from cli.stack import Stack
    from services.common.migrations import SERVICES_WITH_DATABASES
    from tests.support import postgres

    with contextlib.ExitStack() as cleanup:
        use_postgres = postgres.available() or os.environ.get("REQUIRE_POSTGRES") == "1"
        stack = Stack(tmp / "data", fixed_ports=False, extra_env={"QUN_LOG_LEVEL": "INFO"})
        if use_postgres:
            stack.database_urls = {
                name: cleanup.enter_context(postgres.fresh_database(f"e2e_{name}"))
                for name in stack.endpoints
                if name in SERVICES_WITH_DATABASES
            }
        try:
            stack.start()
        except Exception as error:
            raise RuntimeError(f"the local stack did not start: {error}\n{log_tails(tmp / 'data' / 'logs')}") from error
        try:
            yield Deployment(
                gateway=stack.gateway.address,
                token_secret=stack.secrets["QUN_TOKEN_SECRET"],
                metrics_targets={name: [f"127.0.0.1:{e.metrics_port}"] for name, e in stack.endpoints.items()},
                local=True,
                description=f"local stack on {'PostgreSQL' if use_postgres else 'SQLite'}",
                http_url=stack.gateway.http_url,
            )
        finally:
            codes = stack.stop()
            unclean = {name: code for name, code in codes.items() if code != 0}
            if unclean:
                raise RuntimeError(f"processes did not exit cleanly on SIGTERM: {unclean}")


def log_tails(folder: Path, lines: int = 15) -> str:
    if not folder.is_dir():
        return ""
    parts = []
    for path in sorted(folder.glob("*.log")):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path.name}\n" + "\n".join(tail))
    return "\n".join(parts)


# --- Prometheus -------------------------------------------------------------------------------


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise Unconfigured("no `prometheus` on PATH: `make deploy-tools` installs it (Debian package prometheus)")
    return found


@contextlib.contextmanager
def prometheus_server(tmp: Path, targets: dict[str, list[str]]) -> Iterator[str]:
    """A real Prometheus scraping ``targets`` every second with the project's rules; yields its URL.

    Its config comes from the same template as deploy/prometheus/prometheus.yml."""
    from cli.stack import free_port
    from deploy.render import prometheus_config

    tmp.mkdir(parents=True, exist_ok=True)
    config = prometheus_config(
        targets,
        scrape_interval=LOCAL_SCRAPE_INTERVAL,
        evaluation_interval=LOCAL_SCRAPE_INTERVAL,
        rule_files=[str(RULES_FILE)],
    )
    config_file = tmp / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {process.returncode}: {(tmp / 'prometheus.log').read_text()}"
                )
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=1) as reply:
                if reply.status == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("prometheus not ready after 30s")
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@dataclass
class PrometheusAPI:
    url: str
    # Set when the suite runs this Prometheus itself (its rules are the project's).
    own: bool = False

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as error:
            body = json.load(error)
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return list(data["result"])

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["alerts"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["activeTargets"])


def dashboard_queries(rate_interval: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the dashboard, Grafana's variables filled in."""
    from deploy.render import dashboard_exprs

    board = json.loads(DASHBOARD_FILE.read_text())
    filled = []
    for title, expr in dashboard_exprs(board):
        for variable, value in (("$__rate_interval", rate_interval), ("$__interval", "15s"), ("$__range", "1h")):
            expr = expr.replace(variable, value)
        filled.append((title, expr))
    return filled
