"""Instants on the wire: aware UTC ``datetime`` ↔ ``google.protobuf.Timestamp``.

Every service keeps instants as aware UTC datetimes (``UtcDateTime`` columns,
the ``Clock``) and sends them as ``Timestamp`` messages; these are the only
conversions, so a naive datetime or a local time zone never reaches a peer.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(when: datetime) -> Timestamp:
    """``when`` (aware) as a ``Timestamp``."""
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    """A ``Timestamp`` as an aware UTC datetime (range checks are ``Fields.instant``'s)."""
    return stamp.ToDatetime(tzinfo=UTC)


def set_timestamp(message: Message, field: str, when: datetime | None) -> None:
    """Sets the message's timestamp ``field`` to ``when``; leaves it unset for None (proto3 presence)."""
    if when is not None:
        getattr(message, field).CopyFrom(to_timestamp(when))
