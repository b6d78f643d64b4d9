"""Process settings from environment variables, validated at start.

Every process reads the same names; a missing secret or a malformed address
stops the process with a clear message rather than starting half-configured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from services.common.processes import DEFAULT_PORTS
from services.common.tls import TlsError, TlsFiles, tls_from_env

INTERNAL_TOKEN_ENV = "QUN_INTERNAL_TOKEN"
MIN_SECRET_CHARS = 16


DEFAULT_DB_POOL_SIZE = 10
MAX_DB_POOL_SIZE = 100  # PostgreSQL's own default max_connections


class SettingsError(ValueError):
    """The environment is misconfigured; the process must not start."""


@dataclass(frozen=True)
class Settings:
    service: str
    grpc_addr: str
    metrics_addr: str
    metrics_port: int
    database_url: str
    internal_token: str
    grace_seconds: float
    log_level: str
    clock_file: str
    # How often a service's scheduled jobs look for due work (levels, expiry, dispatch …).
    job_interval_seconds: float = 60.0
    # Gateway ↔ backend over TLS with client certificates (``services.common.tls``); None: plaintext.
    tls: TlsFiles | None = None
    # PostgreSQL connections of the hot paths' pool; the ORM's pool is about a third beside it (``db``).
    db_pool_size: int = DEFAULT_DB_POOL_SIZE

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_addr}:{self.metrics_port}/metrics"


def int_setting(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def float_setting(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative")
    return value


def require_secret(env: dict[str, str], name: str) -> str:
    value = env.get(name, "")
    if len(value) < MIN_SECRET_CHARS:
        raise SettingsError(f"{name} must be set to a secret of at least {MIN_SECRET_CHARS} characters")
    return value


def database_url(env: dict[str, str], service: str) -> str:
    """``QUN_DATABASE_URL`` (or ``DATABASE_URL``), else a SQLite file in the data folder.

    Plain ``postgresql://`` and ``sqlite:///`` URLs are given their asyncio drivers.
    """
    url = env.get("QUN_DATABASE_URL") or env.get("DATABASE_URL")
    if not url:
        data_dir = Path(env.get("QUN_DATA_DIR", "data"))
        url = f"sqlite:///{data_dir / f'{service}.db'}"
    return async_url(url)


def async_url(url: str) -> str:
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite:///", "sqlite+aiosqlite:///"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite:///")):
        return url
    raise SettingsError(f"unsupported database URL scheme in {url.split('://')[0]!r}")


def load_settings(service: str, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    grpc_port, metrics_port = DEFAULT_PORTS[service]
    host = env.get("QUN_HOST", "127.0.0.1")
    port = int_setting(env, "QUN_GRPC_PORT", grpc_port, 0, 65535)
    level = env.get("QUN_LOG_LEVEL", "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"QUN_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return Settings(
        service=service,
        grpc_addr=f"{host}:{port}",
        metrics_addr=env.get("QUN_METRICS_HOST", host),
        metrics_port=int_setting(env, "QUN_METRICS_PORT", metrics_port, 0, 65535),
        database_url=database_url(env, service),
        internal_token=require_secret(env, INTERNAL_TOKEN_ENV),
        grace_seconds=float_setting(env, "QUN_GRACE_SECONDS", 5.0),
        log_level=level,
        clock_file=env.get("QUN_CLOCK_FILE", ""),
        job_interval_seconds=float_setting(env, "QUN_JOB_INTERVAL_SECONDS", 60.0),
        tls=tls_settings(env),
        db_pool_size=int_setting(env, "QUN_DB_POOL_SIZE", DEFAULT_DB_POOL_SIZE, 1, MAX_DB_POOL_SIZE),
    )


def tls_settings(env: dict[str, str]) -> TlsFiles | None:
    try:
        return tls_from_env(env)
    except TlsError as error:
        raise SettingsError(str(error)) from None
