"""The numbers of SPEC, loaded from one rules file and overridable by ops.

``config/rules.toml`` holds the defaults; ``QUN_RULES_FILE`` names a file whose
values override them key by key. Unknown keys and wrong types stop the process
at start, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

DEFAULT_RULES_FILE = Path(__file__).resolve().parents[2] / "config" / "rules.toml"
GROUP_LEVELS = 5  # L0..L4 (SPEC E5, T8)


class RulesError(ValueError):
    """The rules file is malformed; the process must not start."""


@dataclass(frozen=True)
class CreateRules:
    min_paid_orders: int
    paid_orders_window_days: int
    min_content_level: int
    content_level_delay_days: int


@dataclass(frozen=True)
class JoinRules:
    min_taoqi_score: int
    merchant_blacklists_to_platform: int
    blacklisted_invitees_to_platform: int
    spend_window_days: int


@dataclass(frozen=True)
class StoreGroupRules:
    sub_group_capacity: int
    group_set_capacity: int
    sub_groups_per_set: int
    group_sets_by_level: tuple[int, ...]
    members_by_level: tuple[int, ...]

    def group_sets_allowed(self, level: int) -> int:
        return self.group_sets_by_level[level]

    def members_allowed(self, level: int) -> int:
        return self.members_by_level[level]


@dataclass(frozen=True)
class LiveGroupRules:
    sub_group_capacity: int
    group_set_capacity: int
    sub_groups_per_set: int
    group_sets_per_streamer: int
    members_per_streamer: int


@dataclass(frozen=True)
class RoleRules:
    max_super_admins: int


@dataclass(frozen=True)
class Rules:
    create: CreateRules
    join: JoinRules
    store_groups: StoreGroupRules
    live_groups: LiveGroupRules
    roles: RoleRules

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if key not in base:
            raise RulesError(f"unknown rule {where}{key}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise RulesError(f"rule {where}{key} must be a table")
            merged[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        name = f"{where}{field.name}"
        if field.name not in data:
            raise RulesError(f"missing rule {name}")
        hint = hints[field.name]
        raw = data[field.name]
        if dataclasses.is_dataclass(hint):
            values[field.name] = _build(hint, raw, f"{name}.")  # type: ignore[arg-type]
        elif get_origin(hint) is tuple:
            if not isinstance(raw, list) or not all(_is_int(v) for v in raw):
                raise RulesError(f"rule {name} must be a list of integers")
            values[field.name] = tuple(raw)
        elif hint is int:
            if not _is_int(raw):
                raise RulesError(f"rule {name} must be an integer, got {raw!r}")
            values[field.name] = raw
        else:  # pragma: no cover - a new field type needs a branch here
            raise RulesError(f"rule {name} has unsupported type {get_args(hint)}")
    return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(rules: Rules) -> None:
    for name, values in (
        ("store_groups.group_sets_by_level", rules.store_groups.group_sets_by_level),
        ("store_groups.members_by_level", rules.store_groups.members_by_level),
    ):
        if len(values) != GROUP_LEVELS:
            raise RulesError(f"rule {name} needs one value per level L0..L4")
    for section in (rules.create, rules.join, rules.store_groups, rules.live_groups, rules.roles):
        for key, value in dataclasses.asdict(section).items():
            for v in value if isinstance(value, tuple) else (value,):
                if v < 0:
                    raise RulesError(f"rule {key} must not be negative")


def load_rules(path: Path | None = None, env: dict[str, str] | None = None) -> Rules:
    """Defaults from ``config/rules.toml``, then the file ``QUN_RULES_FILE`` names."""
    env = env if env is not None else dict(os.environ)
    data = tomllib.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))
    override_path = path or (Path(env["QUN_RULES_FILE"]) if env.get("QUN_RULES_FILE") else None)
    if override_path is not None:
        try:
            override = tomllib.loads(override_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RulesError(f"cannot read rules file {override_path}: {exc}") from exc
        data = _merge(data, override, "")
    rules: Rules = _build(Rules, data, "")
    _check(rules)
    return rules
