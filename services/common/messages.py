"""A domain object (row, view, dataclass) as a proto message: fields copied by name.

The services' messages name their fields as the rows and views they answer
from do, so most of a ``*_to_proto`` would be ``field=row.field`` once per
field. ``message_from`` copies every field of the target that the source
has an attribute for; the caller passes only what differs (an enum mapped
to its proto value, a computed figure, a nested message) as keywords.

How a value is set:
- ``None`` leaves the field unset (its default; for a timestamp or a
  ``optional`` scalar, absent), as ``row.item_id or ""`` would;
- an aware ``datetime`` becomes a ``Timestamp``;
- a list or tuple replaces a repeated field's values;
- a message is copied into a message field;
- anything else is assigned, so a type the field cannot hold fails loudly
  (``TypeError``) rather than being dropped.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from services.common.timestamps import to_timestamp

M = TypeVar("M", bound=Message)


def message_from(target: type[M], source: object, /, **fields: Any) -> M:
    """A new ``target`` with each of its fields taken from ``fields`` if named there, else from ``source``'s attribute."""
    out = target()
    for name in _field_names(target.DESCRIPTOR):
        if name in fields:
            value = fields[name]
        else:
            value = getattr(source, name, None)
        set_field(out, name, value)
    return out


def set_field(message: Message, name: str, value: Any) -> None:
    """Sets one field of ``message`` as ``message_from`` does (see the module's rules)."""
    if value is None:
        return
    if isinstance(value, datetime):
        getattr(message, name).CopyFrom(to_timestamp(value))
    elif isinstance(value, Message):
        getattr(message, name).CopyFrom(value)
    elif isinstance(value, (list, tuple)):
        repeated = getattr(message, name)
        del repeated[:]  # replaces what a copy put there
        repeated.extend(value)
    elif callable(value):  # a method that shares a field's name (``Row.count``), never a value
        raise TypeError(f"{type(message).__name__}.{name}: pass it by keyword, the source's is a method")
    else:
        setattr(message, name, value)


@functools.cache
def _field_names(descriptor: Descriptor) -> tuple[str, ...]:
    return tuple(field.name for field in descriptor.fields)
