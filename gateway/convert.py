"""Backend messages ⇄ public API messages: copied by field name, with what the public may not see taken out.

The public API and the backends' APIs are separate contracts whose shared
fields carry the same names. A copy goes field by field, by name: a field the
target lacks is dropped (internal fields never leave the gateway, and a caller
never sets one), an enum value goes by its name (a number neither contract
names passes as it is: proto3 enums are open), and fields unknown to the
source's schema (read off the wire) are not copied.

It copies as ``json_format`` would, without building and parsing JSON twice
per call (why: ADR 0011). Like JSON, it cannot read a timestamp outside
0001..9999 or with nanos out of range: the caller's error (INVALID_ARGUMENT),
not the gateway's. How each field is copied is worked out once per pair of
message types.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from qun.gateway.v1 import gateway_pb2
from qun.groups.v1 import groups_pb2
from services.common.errors import InvalidArgument
from services.common.messages import set_field

M = TypeVar("M", bound=Message)
# Copies one set field's value into the target message.
Step = Callable[[Any, Message], None]

TIMESTAMP = Timestamp.DESCRIPTOR.full_name


def convert(source: Message, target: type[M], /, **fields: Any) -> M:
    """``source`` copied field by field into a new ``target`` (unknown fields dropped), then ``fields`` set over it
    (as ``message_from`` sets them: a message copied in, a list extending, None leaving the copy as it is)."""
    out = target()
    try:
        _copy(source, out)
    except ValueError as error:  # e.g. a timestamp outside 0001..9999, nanos out of range
        raise InvalidArgument.one("request", f"cannot be read: {error}") from None
    for name, value in fields.items():
        set_field(out, name, value)
    return out


def _copy(source: Message, out: Message) -> None:
    steps = _steps(source.DESCRIPTOR, out.DESCRIPTOR)
    for field, value in source.ListFields():
        step = steps.get(field)
        if step is not None:
            step(value, out)


def _copy_timestamp(source: Message, out: Message) -> None:
    """A timestamp is copied only when it is one: its RFC 3339 form, as JSON wrote it, raises ValueError if not."""
    assert isinstance(source, Timestamp) and isinstance(out, Timestamp)
    source.ToJsonString()
    out.seconds, out.nanos = source.seconds, source.nanos


@functools.cache
def _steps(source: Descriptor, target: Descriptor) -> dict[FieldDescriptor, Step]:
    """How each field of ``source`` that ``target`` also has is copied, by the source's field."""
    return {
        field: _step(field, target.fields_by_name[field.name])
        for field in source.fields
        if field.name in target.fields_by_name
    }


def _step(field: FieldDescriptor, other: FieldDescriptor) -> Step:
    if (field.cpp_type, field.is_repeated) != (other.cpp_type, other.is_repeated):
        raise TypeError(f"{field.full_name} and {other.full_name} differ in kind; they cannot be copied by name")
    name = field.name
    if field.message_type is not None:
        if field.message_type.GetOptions().map_entry:
            return _map_step(field, other)
        assert other.message_type is not None  # the kinds were compared above
        copy = _message_copy(field.message_type, other.message_type)
        if field.is_repeated:
            return lambda values, out: _copy_each(copy, values, getattr(out, name))
        return lambda value, out: _copy_into(copy, value, getattr(out, name))
    if field.enum_type is not None:
        assert other.enum_type is not None  # the kinds were compared above
        to_target = _enum_numbers(field.enum_type, other.enum_type)
        if field.is_repeated:
            return lambda values, out: getattr(out, name).extend(
                n for n in (to_target.get(v, v) for v in values) if n is not None
            )
        return lambda value, out: _set_enum(out, name, to_target.get(value, value))
    if field.is_repeated:
        return lambda values, out: getattr(out, name).extend(values)
    return lambda value, out: setattr(out, name, value)


def _map_step(field: FieldDescriptor, other: FieldDescriptor) -> Step:
    """A map of scalars (a refusal's figures) is copied entry by entry when both sides hold the same kinds."""
    assert field.message_type is not None and other.message_type is not None  # both are map entries
    kinds = [
        [(entry.fields_by_name[part].cpp_type, entry.fields_by_name[part].message_type) for part in ("key", "value")]
        for entry in (field.message_type, other.message_type)
    ]
    if kinds[0] != kinds[1] or kinds[0][1][1] is not None:
        raise TypeError(f"{field.full_name}: only maps of the same scalars are copied")
    name = field.name
    return lambda values, out: getattr(out, name).update(values)


def _message_copy(source: Descriptor, target: Descriptor) -> Callable[[Message, Message], None]:
    is_timestamp = (source.full_name == TIMESTAMP, target.full_name == TIMESTAMP)
    if is_timestamp == (True, True):
        return _copy_timestamp
    if any(is_timestamp):
        raise TypeError(f"{source.full_name} and {target.full_name}: only a timestamp is copied into a timestamp")
    return _copy


def _copy_into(copy: Callable[[Message, Message], None], value: Message, sub: Message) -> None:
    sub.SetInParent()  # a set but empty message stays set
    copy(value, sub)


def _copy_each(copy: Callable[[Message, Message], None], values: Iterable[Message], target: Any) -> None:
    for value in values:
        copy(value, target.add())


def _enum_numbers(source: EnumDescriptor, target: EnumDescriptor) -> dict[int, int | None]:
    """The target's number for each of the source's values by name; None where the target has no such name."""
    named = target.values_by_name
    return {v.number: (named[v.name].number if v.name in named else None) for v in source.values}


def _set_enum(out: Message, name: str, number: int | None) -> None:
    if number is not None:
        setattr(out, name, number)


# -- groups messages as the public reads them ------------------------------------------------------


def group_set(msg: groups_pb2.GroupSet, *, show_staff_fields: bool) -> gateway_pb2.GroupSet:
    """A group-set as the public reads it: never a password, the newcomer auto-reply to its staff only."""
    out = convert(msg, gateway_pb2.GroupSet)
    if out.threshold.HasField("password"):
        out.threshold.password.password = ""
    if not show_staff_fields:
        out.ClearField("newcomer_reply")
    return out


def membership(msg: groups_pb2.Membership) -> gateway_pb2.Membership:
    return convert(msg, gateway_pb2.Membership)


def removal(msg: groups_pb2.Removal) -> gateway_pb2.Removal:
    """A removal as the member reads it: the group, the cause, the reason; not the remover's account (R5)."""
    return convert(msg, gateway_pb2.Removal)
