"""How each table would be spread over the nodes of a sharded PostgreSQL (Citus-style), declared beside it.

A marketplace's data grows by store, and one store's work touches one store's
rows, so every table that grows is *distributed* by its tenant: its primary
key leads with the tenant's column, its unique keys include it, and the
statements of the hot paths name it, so each runs on the one node that holds
the tenant. Small tables every node needs whole (a consumer's platform-wide
facts) are *reference* tables, copied to every node. The few tables that are
neither say so, with the design that would replace them (ADR 0014).

A service's base names the column its tables are distributed by
(``NamedConstraints.tenant_column``); a table that differs declares it in its
``__table_args__``::

    __table_args__ = (..., {"info": reference("a consumer's platform facts, read with any store's")})

``tests/unit/test_ready_to_shard.py`` reads these declarations with the
models and the hot statements, and fails on a table or statement that does not
keep them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table

SHARDING = "qun.sharding"


@dataclass(frozen=True)
class Distributed:
    """Spread by ``column``; ``unsharded_keys`` names unique keys without it, each with why (ADR 0014)."""

    column: str
    unsharded_keys: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Undistributed:
    """A table kept whole, and why."""

    reason: str


class Reference(Undistributed):
    """Copied whole to every node: small, read together with any tenant's rows."""


class Coordinator(Undistributed):
    """One row for the whole platform, kept on the coordinator; its per-shard design is in ADR 0014."""


Sharding = Distributed | Reference | Coordinator


def distributed_by(column: str, **unsharded_keys: str) -> dict[str, Any]:
    """A table's ``info`` when it is distributed by another column than its base's tenant column."""
    return {SHARDING: Distributed(column, unsharded_keys)}


def reference(reason: str) -> dict[str, Any]:
    """A table's ``info`` for a reference table."""
    return {SHARDING: Reference(reason)}


def coordinator(reason: str) -> dict[str, Any]:
    """A table's ``info`` for a platform-wide row kept on the coordinator."""
    return {SHARDING: Coordinator(reason)}


def sharding_of(table: Table) -> Sharding | None:
    """The table's own declaration, else its base's tenant column; None when neither says."""
    declared = table.info.get(SHARDING)
    if declared is not None:
        return declared  # type: ignore[no-any-return]  # only this module writes the key
    column = table.metadata.info.get(SHARDING)
    return Distributed(column) if isinstance(column, str) else None
