"""Hypothesis strategies that walk a protobuf message descriptor.

Every field gets random and boundary values: strings empty, huge, unicode,
with NUL, shaped like ids or not (and the real ids of the fixtures, so calls
get past "not found"); integers at their type's bounds, and at the API's own
bounds (SPEC D2: the largest valid value and the one just past it); enum numbers that do
not exist; repeated fields long; nested messages a few levels deep;
timestamps far outside what a calendar holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor as pbd
from google.protobuf import message_factory
from hypothesis import strategies as st

from gateway.bounds import VALUE_LIMITS
from services.common.rules import load_rules

FD = pbd.FieldDescriptor
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
MAX_DEPTH = 3
BOUNDS = load_rules(env={}).bounds
# Valid range of google.protobuf.Timestamp seconds: 0001-01-01 .. 9999-12-31.
TIMESTAMP_SECONDS = (-62135596800, 253402300799)

HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "x" * 65,  # one past the id limit
    "x" * 5000,
    "群" * 3000,
    "🙂" * 100,
    "../../etc/passwd",
    "' OR 1=1 --",
    "%s%n",
    "gs_",
    "-leading-dash",
    "with space",
    "\u202eright-to-left",
    "\ud7ff\ue000\uffff",
    "2026-13",
    "9999-12",
    "0000-00",
]


def _int_strategy(low: int, high: int) -> st.SearchStrategy[int]:
    bounds = sorted({low, high, 0, 1, -1 if low < 0 else 2, high - 1, low + 1})
    return st.one_of(st.sampled_from([b for b in bounds if low <= b <= high]), st.integers(low, high))


def _bounded(field: pbd.FieldDescriptor) -> list[int]:
    """SPEC D2: the field's own bounds (``gateway.bounds``): each end, just inside, and just past the top."""
    limit = VALUE_LIMITS.get(field.full_name)
    if limit is None:
        return []
    high = limit.ceiling(BOUNDS)
    return [limit.low, limit.low + 1, high - 1, high, high + 1]


def _scalar(field: pbd.FieldDescriptor, ids: Sequence[str]) -> st.SearchStrategy[Any]:
    edges = _bounded(field)
    if edges:  # the extremes that are valid, and the value just past them, half the time
        return st.one_of(st.sampled_from(edges), _type_scalar(field, ids))
    return _type_scalar(field, ids)


def _type_scalar(field: pbd.FieldDescriptor, ids: Sequence[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FD.TYPE_STRING:
        pool = [*HOSTILE_STRINGS, *ids]
        return st.one_of(st.sampled_from(pool), st.text(max_size=40), st.sampled_from(ids) if ids else st.just("x"))
    if kind == FD.TYPE_BYTES:
        return st.one_of(st.just(b""), st.binary(max_size=64), st.just(b"\xff" * 5000))
    if kind == FD.TYPE_BOOL:
        return st.booleans()
    if kind in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return _int_strategy(*INT32)
    if kind in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return _int_strategy(*INT64)
    if kind in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return _int_strategy(*UINT32)
    if kind in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return _int_strategy(*UINT64)
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if kind == FD.TYPE_FLOAT else 64)
    if kind == FD.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        unknown = st.integers(*INT32).filter(lambda n: n not in known)
        return st.one_of(st.sampled_from(known), st.sampled_from(known), unknown)
    raise NotImplementedError(f"field {field.full_name} of type {kind}")  # pragma: no cover


def _timestamp(descriptor: pbd.Descriptor) -> st.SearchStrategy[Any]:
    cls = message_factory.GetMessageClass(descriptor)
    seconds = st.one_of(
        st.integers(1_700_000_000, 1_900_000_000),  # around now
        st.sampled_from([0, -1, *TIMESTAMP_SECONDS, TIMESTAMP_SECONDS[1] + 1, *INT64]),
        st.integers(*INT64),
    )
    nanos = st.one_of(st.just(0), st.integers(0, 999_999_999), st.sampled_from([-1, 10**9, *INT32]))
    return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)


def message(descriptor: pbd.Descriptor, ids: Sequence[str] = (), depth: int = 0) -> st.SearchStrategy[Any]:
    """Instances of the message ``descriptor`` describes, any subset of fields set."""
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return _timestamp(descriptor)
    if depth > MAX_DEPTH:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        optional[field.name] = _field(field, ids, depth)
    return st.fixed_dictionaries({}, optional=optional).map(lambda kwargs: _make(cls, kwargs))


def _make(cls: type[Any], kwargs: dict[str, Any]) -> Any:
    msg = cls()
    for name, value in kwargs.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(msg, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if value_field.message_type is not None:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            target.extend(value)
        elif field.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


def _field(field: pbd.FieldDescriptor, ids: Sequence[str], depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = _scalar(field.message_type.fields_by_name["key"], ids)
        value_field = field.message_type.fields_by_name["value"]
        value = (
            message(value_field.message_type, ids, depth + 1) if value_field.message_type else _scalar(value_field, ids)
        )
        return st.dictionaries(key, value, max_size=4)
    one = message(field.message_type, ids, depth + 1) if field.message_type is not None else _scalar(field, ids)
    if not field.is_repeated:
        return one
    # Usually a few; sometimes very many copies of one value (a deep list).
    many = one.flatmap(lambda item: st.integers(200, 3000).map(lambda n: [item] * n))
    return st.one_of(st.lists(one, max_size=4), st.lists(one, max_size=4), many)
