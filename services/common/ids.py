"""Ids the services mint for their rows: ``<prefix>_<16 hex digits>``.

Random rather than sequential, so ids reveal no counts and replicas mint them
without coordination; the prefix says what an id names (``gs`` a group-set,
``pur`` a purchase …) in logs and support tickets. 64 random bits make a
collision within one store's rows negligible, and the primary key refuses
one anyway.
"""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta

from services.common.validation import MAX_INT64

RANDOM_BYTES = 8
# ordered_id: milliseconds since EPOCH above ORDERED_RANDOM_BITS random bits; fits a signed 64-bit
# integer until MAX_ORDERED_AT (in 2069).
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
ORDERED_RANDOM_BITS = 22
# The last millisecond that fits a BIGINT key above the random bits; a clock past it mints as if at it.
MAX_ORDERED_MILLIS = MAX_INT64 >> ORDERED_RANDOM_BITS
MAX_ORDERED_AT = EPOCH + timedelta(milliseconds=MAX_ORDERED_MILLIS)
_last_ordered = 0
_ordered_lock = threading.Lock()


def new_id(prefix: str) -> str:
    """A fresh id for a row of the kind ``prefix`` names."""
    return f"{prefix}_{secrets.token_hex(RANDOM_BYTES)}"


def ordered_id(now: datetime) -> int:
    """A number for a row read in the order it was written (an audit trail, a removal list).

    Minted here rather than counted by the database, for a key that leads with its tenant (ADR 0014):
    the milliseconds of ``now`` above 22 random bits, and never below the last number this process
    minted, so one process's rows keep their order whatever its clock does. Rows of other replicas in
    the same millisecond are told apart by the random bits; the primary key refuses the rare repeat.
    """
    global _last_ordered
    millis = min(max(0, int((now - EPOCH).total_seconds() * 1000)), MAX_ORDERED_MILLIS)
    candidate = (millis << ORDERED_RANDOM_BITS) | secrets.randbits(ORDERED_RANDOM_BITS)
    with _ordered_lock:
        _last_ordered = max(candidate, _last_ordered + 1)
        return _last_ordered
