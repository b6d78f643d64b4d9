"""Gateway settings: where the backends are, the token key, call budgets."""

from __future__ import annotations

import os
from dataclasses import dataclass

from services.common.processes import spec
from services.common.settings import Settings, SettingsError, float_setting, int_setting, load_settings, require_secret

TOKEN_SECRET_ENV = "QUN_TOKEN_SECRET"


@dataclass(frozen=True)
class GatewaySettings:
    base: Settings
    token_secret: str
    eligibility_addr: str
    groups_addr: str
    campaigns_addr: str
    push_addr: str
    downstream_timeout: float
    downstream_attempts: int


def load_gateway_settings(base: Settings, env: dict[str, str] | None = None) -> GatewaySettings:
    env = dict(os.environ) if env is None else env

    def backend(name: str) -> str:
        """Where a backend listens: its ``QUN_<NAME>_ADDR``, or its default loopback port."""
        process = spec(name)
        value = env.get(process.addr_env, process.default_addr)
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError(f"{process.addr_env} must be host:port, got {value!r}")
        return value

    timeout = float_setting(env, "QUN_DOWNSTREAM_TIMEOUT_SECONDS", 2.0)
    if timeout <= 0:
        raise SettingsError("QUN_DOWNSTREAM_TIMEOUT_SECONDS must be positive")
    return GatewaySettings(
        base=base,
        token_secret=require_secret(env, TOKEN_SECRET_ENV),
        eligibility_addr=backend("eligibility"),
        groups_addr=backend("groups"),
        campaigns_addr=backend("campaigns"),
        push_addr=backend("push"),
        downstream_timeout=timeout,
        downstream_attempts=int_setting(env, "QUN_DOWNSTREAM_ATTEMPTS", 3, 1, 10),
    )


def gateway_settings_from_env() -> GatewaySettings:
    return load_gateway_settings(load_settings("gateway"))
