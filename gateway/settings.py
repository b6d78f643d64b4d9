"""Gateway settings: where the backends are, the token key, call budgets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gateway.keys import PublicKeys, SharedSecret, TokenKeys
from services.common.processes import spec
from services.common.settings import Settings, SettingsError, float_setting, int_setting, load_settings, require_secret

TOKEN_SECRET_ENV = "QUN_TOKEN_SECRET"


REPLICAS_ENV = "QUN_GATEWAY_REPLICAS"
JWKS_FILE_ENV = "QUN_JWKS_FILE"
JWKS_URL_ENV = "QUN_JWKS_URL"
HTTP_PORT_ENV = "QUN_HTTP_PORT"
CORS_ENV = "QUN_HTTP_CORS_ORIGINS"


@dataclass(frozen=True)
class GatewaySettings:
    base: Settings
    token_keys: TokenKeys  # public keys (a JWKS) in production, the local stack's shared secret otherwise
    eligibility_addr: str
    groups_addr: str
    campaigns_addr: str
    push_addr: str
    downstream_timeout: float
    downstream_attempts: int
    # How many gateway replicas share the rate limits of the rules file (each takes its share).
    replicas: int = 1
    # host:port of the JSON-over-HTTP (Connect) port; empty: none.
    http_bind: str = ""
    # Origins whose browsers may call the HTTP port (CORS); none by default, "*" for any.
    cors_origins: tuple[str, ...] = ()


def load_gateway_settings(base: Settings, env: dict[str, str] | None = None) -> GatewaySettings:
    env = dict(os.environ) if env is None else env

    def backend(name: str) -> str:
        """Where a backend listens: its ``QUN_<NAME>_ADDR``, or its default loopback port (``backend_target``)."""
        process = spec(name)
        return backend_target(process.addr_env, env.get(process.addr_env, process.default_addr))

    timeout = float_setting(env, "QUN_DOWNSTREAM_TIMEOUT_SECONDS", 2.0)
    if timeout <= 0:
        raise SettingsError("QUN_DOWNSTREAM_TIMEOUT_SECONDS must be positive")
    return GatewaySettings(
        base=base,
        token_keys=token_keys(env),
        eligibility_addr=backend("eligibility"),
        groups_addr=backend("groups"),
        campaigns_addr=backend("campaigns"),
        push_addr=backend("push"),
        downstream_timeout=timeout,
        downstream_attempts=int_setting(env, "QUN_DOWNSTREAM_ATTEMPTS", 3, 1, 10),
        replicas=int_setting(env, REPLICAS_ENV, 1, 1, 1000),
        http_bind=http_bind(env),
        cors_origins=tuple(origin.strip() for origin in env.get(CORS_ENV, "").split(",") if origin.strip()),
    )


def http_bind(env: dict[str, str]) -> str:
    """Where the HTTP port listens: ``QUN_HTTP_HOST`` (else ``QUN_HOST``) and ``QUN_HTTP_PORT`` (0 turns it off)."""
    port = int_setting(env, HTTP_PORT_ENV, spec("gateway").http_port, 0, 65535)
    if port == 0:
        return ""
    return f"{env.get('QUN_HTTP_HOST', env.get('QUN_HOST', '127.0.0.1'))}:{port}"


def token_keys(env: dict[str, str]) -> TokenKeys:
    """Public keys when a JWKS is configured (and then HS256 is refused), else the shared secret."""
    path, url = env.get(JWKS_FILE_ENV, ""), env.get(JWKS_URL_ENV, "")
    if path and url:
        raise SettingsError(f"set {JWKS_FILE_ENV} or {JWKS_URL_ENV}, not both")
    try:
        if path:
            return PublicKeys.from_file(Path(path))
        if url:
            if not url.startswith("https://") and not url.startswith("http://127.0.0.1"):
                raise SettingsError(f"{JWKS_URL_ENV} must be an https:// URL, got {url!r}")
            return PublicKeys.from_url(url)
    except SettingsError:
        raise
    except Exception as error:  # unreadable, not JSON, no usable key: the gateway must not start
        raise SettingsError(f"cannot read the JWKS from {path or url}: {error}") from error
    return SharedSecret(require_secret(env, TOKEN_SECRET_ENV))


def backend_target(variable: str, value: str) -> str:
    """A gRPC target naming one backend's replicas: ``host:port``, ``dns:///host:port`` (every address
    the name resolves to, e.g. a headless Service) or ``ipv4:host:port,host:port`` (a list).

    The channel spreads calls over all of them (``services.common.client``).
    """
    if value.startswith("dns:///"):
        addresses = [value.removeprefix("dns:///")]
    elif value.startswith("ipv4:"):
        addresses = value.removeprefix("ipv4:").split(",")
    else:
        addresses = [value]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(
                f"{variable} must be host:port, dns:///host:port or ipv4:host:port,host:port, got {value!r}"
            )
    return value


def gateway_settings_from_env() -> GatewaySettings:
    return load_gateway_settings(load_settings("gateway"))
