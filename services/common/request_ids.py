"""The one ``request_id`` rule of every service (docs/adr/0001-request-id-rule.md).

A mutation that takes a ``request_id`` runs once per id within its scope (the
store, the owner, or the group-set and consumer, as each RPC documents):

* the same id with **the same request** answers what the first call answered
  and changes nothing;
* the same id with **a different request** is ``ALREADY_EXISTS`` with
  ``ErrorInfo`` reason ``REQUEST_ID_REUSED`` (metadata ``request_id``), and
  changes nothing: the id names a request that exists, and retrying cannot
  help; the caller needs a new id for a new request.

"The same request" is decided by a fingerprint: a digest of the request's
fields as the service validated them, stored beside the id when the first
call writes. Fields the caller does not choose (figures and levels the
gateway reads anew on each call) and secrets (passwords) are left out; so is
the id itself. A row written before fingerprints were kept has none, and is
taken to be the same request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from enum import Enum

from services.common.errors import AlreadyExists

FINGERPRINT_CHARS = 64  # a SHA-256 in hex: the width of the columns that keep it
REASON = "REQUEST_ID_REUSED"


class RequestIdReused(AlreadyExists):
    """A request id already names another request (ALREADY_EXISTS, ``REQUEST_ID_REUSED``)."""

    reason = REASON

    def __init__(self, request_id: str, what: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was used for another {what}; send a new request_id for a new request",
            metadata={"request_id": request_id},
        )


def request_fingerprint(**fields: object) -> str:
    """The digest that tells one request from another: of ``fields`` (plain values, enums, instants, dataclasses)."""
    canonical = json.dumps(_plain(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, frozenset | set) else items
    return value


def check_same_request(request_id: str, stored: str | None, fingerprint: str, what: str) -> None:
    """Raises ``RequestIdReused`` when the request stored under ``request_id`` is another one.

    ``stored`` is the first request's fingerprint; None (a row from before
    fingerprints) passes.
    """
    if stored is not None and stored != fingerprint:
        raise RequestIdReused(request_id, what)
