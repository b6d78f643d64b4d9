"""Ready to shard by store (ADR 0014): the models and the hot statements keep their tables' declarations.

Read from the models (``services.common.sharding``): a distributed table's
primary key leads with its tenant column, its unique keys include it, and its
foreign keys to distributed tables carry it on both sides (the rows they join
live on one node); a reference table refers to no distributed table. Then the
hot statements (those prebuilt for the driver paths, and groups' join
function): each names the tenant column of every distributed table it reads
or writes, so each runs on one node.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Index, Table, UniqueConstraint, bindparam, insert, select
from sqlalchemy.sql import operators
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import BinaryExpression, BindParameter
from sqlalchemy.sql.visitors import iterate

import services
from services.campaigns import models as campaigns
from services.common.sharding import Coordinator, Distributed, Reference, sharding_of
from services.common.sqlite_driver import ON_DRIVER_OPTION
from services.eligibility import models as eligibility
from services.eligibility import verdicts
from services.eligibility.domain import Threshold
from services.groups import models as groups
from services.push import models as push

BASES = (campaigns.Base, eligibility.Base, groups.Base, push.Base)

ALL_TABLES = [table for base in BASES for table in base.metadata.sorted_tables]


def _tables() -> list[Any]:
    return [pytest.param(t, id=t.name) for t in ALL_TABLES]


def distributed(table: Table) -> Distributed | None:
    declared = sharding_of(table)
    return declared if isinstance(declared, Distributed) else None


@pytest.mark.parametrize("table", _tables())
def test_every_table_says_how_it_is_sharded(table: Table) -> None:
    declared = sharding_of(table)
    assert isinstance(declared, Distributed | Reference | Coordinator), f"{table.name}: no sharding declared"
    if isinstance(declared, Reference | Coordinator):
        assert declared.reason.strip(), f"{table.name}: a reference or coordinator table says why"


@pytest.mark.parametrize("table", _tables())
def test_a_distributed_table_leads_its_keys_with_its_tenant(table: Table) -> None:
    declared = distributed(table)
    if declared is None:
        return
    assert declared.column in table.c, f"{table.name} has no column {declared.column}"
    key = [column.name for column in table.primary_key.columns]
    assert key[0] == declared.column, f"{table.name}: primary key {key} does not lead with {declared.column}"
    unique: list[tuple[str, list[str]]] = [
        (str(c.name), [col.name for col in c.columns]) for c in table.constraints if isinstance(c, UniqueConstraint)
    ]
    unique += [
        (str(i.name), [col.name for col in i.columns]) for i in table.indexes if isinstance(i, Index) and i.unique
    ]
    for name, columns in unique:
        if name in declared.unsharded_keys:
            assert declared.unsharded_keys[name].strip()
            continue
        assert declared.column in columns, f"{table.name}: unique key {name} {columns} lacks {declared.column}"


@pytest.mark.parametrize("table", _tables())
def test_foreign_keys_stay_on_one_node(table: Table) -> None:
    declared = sharding_of(table)
    for key in table.foreign_key_constraints:
        target = key.referred_table
        target_declared = sharding_of(target)
        if isinstance(target_declared, Reference):
            continue
        assert isinstance(declared, Distributed), f"{table.name} refers to {target.name}, which is not a reference"
        assert isinstance(target_declared, Distributed), f"{table.name} refers to {target.name}, kept on one node"
        pairs = {(element.parent.name, element.column.name) for element in key.elements}
        assert (declared.column, target_declared.column) in pairs, (
            f"{table.name} → {target.name}: the key {sorted(pairs)} does not join the tenant columns"
        )


# --- the hot statements ------------------------------------------------------------------------


def _hot_statements() -> Iterator[tuple[str, Executable]]:
    """Every statement a service module prebuilt for the driver paths, with the verdict read's every shape."""
    for info in pkgutil.walk_packages(services.__path__, "services."):
        if ".migrations" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            values = value.items() if isinstance(value, dict) else [(None, value)]
            for key, statement in values:
                if isinstance(statement, Executable) and statement.get_execution_options().get(ON_DRIVER_OPTION):
                    yield (f"{info.name}.{name}" + (f"[{key}]" if key is not None else "")), statement
    for for_store in (True, False):
        for shape in (None, *Threshold.__args__):  # type: ignore[attr-defined]  # a Union's members
            yield (
                f"verdicts.join[{for_store}, {getattr(shape, '__name__', shape)}]",
                verdicts._join_statement(for_store, shape),
            )


HOT = [pytest.param(name, statement, id=name) for name, statement in _hot_statements()]


def _base_table(element: Any) -> Table | None:
    while element is not None and not isinstance(element, Table):
        element = getattr(element, "element", None)
    return element


def _tables(statement: Executable) -> set[Table]:
    found = set()
    for element in iterate(statement):  # type: ignore[arg-type]
        if isinstance(element, Column) and element.table is not None:
            table = _base_table(element.table)
            if table is not None:
                found.add(table)
        table = _base_table(element) if isinstance(element, Table) else None
        if table is not None:
            found.add(table)
    return found


def _is_column(element: Any, table: Table, name: str) -> bool:
    return isinstance(element, Column) and element.name == name and _base_table(element.table) is table


def _bound_pins(statement: Executable, table: Table, column: str) -> set[str]:
    """The parameters ``table.column`` is set equal to, or inserted as."""
    if isinstance(statement, Insert) and _base_table(statement.table) is table:
        values = statement._values  # type: ignore[attr-defined]  # what .values() was given
        if values is None:
            return {column}  # the column's own parameter
        value = next((v for k, v in values.items() if getattr(k, "name", k) == column), None)
        return {value.key} if isinstance(value, BindParameter) else set()
    pins = set()
    for element in iterate(statement):  # type: ignore[arg-type]
        if isinstance(element, BinaryExpression) and element.operator is operators.eq:
            for side, other in ((element.left, element.right), (element.right, element.left)):
                if _is_column(side, table, column) and isinstance(other, BindParameter):
                    pins.add(str(other.key))
    return pins


def _joined_tenants(statement: Executable) -> list[tuple[Table, Table]]:
    """Pairs of distributed tables whose tenant columns the statement sets equal (a join on one node)."""
    pairs = []
    for element in iterate(statement):  # type: ignore[arg-type]
        if isinstance(element, BinaryExpression) and element.operator is operators.eq:
            left, right = element.left, element.right
            if isinstance(left, Column) and isinstance(right, Column):
                a, b = _base_table(left.table), _base_table(right.table)
                da, db = (distributed(a) if a is not None else None), (distributed(b) if b is not None else None)
                if da and db and left.name == da.column and right.name == db.column:
                    pairs.append((a, b))
    return pairs  # type: ignore[return-value]


def _pins(statement: Executable) -> dict[Table, set[str]]:
    """Each distributed table of the statement and the parameters that fix its tenant, through joins too."""
    pins = {
        table: _bound_pins(statement, table, declared.column)
        for table in _tables(statement)
        if (declared := distributed(table)) is not None
    }
    for _ in range(len(pins)):
        for a, b in _joined_tenants(statement):
            pins[a] |= pins.get(b, set())
            pins[b] |= pins.get(a, set())
    return pins


@pytest.mark.parametrize(("name", "statement"), HOT)
def test_every_hot_statement_runs_on_one_node(name: str, statement: Executable) -> None:
    by_column: dict[str, set[str]] = {}
    for table, pins in _pins(statement).items():
        column = distributed(table).column  # type: ignore[union-attr]
        assert pins, f"{name} does not fix {table.name}.{column}"
        by_column.setdefault(column, set()).update(pins)
    for column, pins in by_column.items():
        assert len(pins) == 1, f"{name} fixes {column} to several values {sorted(pins)}: its rows are on several nodes"


def test_the_hot_statements_were_found() -> None:
    names = {param.values[0].split("[")[0] for param in HOT}
    assert any(n.startswith("services.groups.joins.") for n in names)
    assert any(n.startswith("services.campaigns.orders.") for n in names)
    assert "verdicts.join" in names


# --- groups' join function (PostgreSQL) ---------------------------------------------------------

_TABLE_NAME = re.compile(r"\b(?:FROM|UPDATE|INTO|JOIN)\s+(\w+)", re.IGNORECASE)


def _join_function() -> str:
    """The newest ``qun_join`` of groups' migrations."""
    versions = importlib.import_module("services.groups.migrations.versions")
    found = ""
    for info in sorted(pkgutil.iter_modules(versions.__path__), key=lambda info: info.name):
        found = getattr(importlib.import_module(f"{versions.__name__}.{info.name}"), "JOIN_FUNCTION", found)
    assert found
    return found


def test_the_join_function_names_the_tenant_in_every_statement() -> None:
    body = _join_function().split("BEGIN", 1)[1]
    tables = {table.name: distributed(table) for table in groups.Base.metadata.sorted_tables}
    checked = 0
    for statement in body.split(";"):
        for table_name in _TABLE_NAME.findall(statement):
            declared = tables.get(table_name)
            if declared is None:
                continue
            checked += 1
            assert re.search(rf"\b{declared.column}\b", statement), f"qun_join: {statement.strip()[:120]}…"
    assert checked >= 10


def test_the_check_tells_a_store_pinned_statement_from_one_that_is_not() -> None:
    items = campaigns.Base.metadata.tables["items"]
    restocks = campaigns.Base.metadata.tables["restocks"]
    by_store = select(items).where(items.c.store_id == bindparam("s"), items.c.item_id == bindparam("i"))
    assert _pins(by_store) == {items: {"s"}}
    assert _pins(select(items).where(items.c.item_id == bindparam("i"))) == {items: set()}
    assert _pins(select(items).where(items.c.store_id > bindparam("s"))) == {items: set()}
    assert _pins(insert(items).values(store_id=bindparam("s"), item_id="i")) == {items: {"s"}}
    assert _pins(insert(items).values(item_id="i")) == {items: set()}
    joined = by_store.join_from(items, restocks, restocks.c.store_id == items.c.store_id)
    assert _pins(joined) == {items: {"s"}, restocks: {"s"}}
    two_stores = select(items, restocks).where(
        items.c.store_id == bindparam("s"), restocks.c.store_id == bindparam("t")
    )
    assert _pins(two_stores) == {items: {"s"}, restocks: {"t"}}
    with pytest.raises(AssertionError, match="several values"):
        test_every_hot_statement_runs_on_one_node("two stores", two_stores)
    with pytest.raises(AssertionError, match="does not fix"):
        test_every_hot_statement_runs_on_one_node("by item", select(items).where(items.c.item_id == bindparam("i")))
