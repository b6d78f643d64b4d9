"""Page tokens: one opaque format for every listing of every service.

A token is the URL-safe base64 (unpadded) of a JSON array of strings: the
keys of the last row a page listed — a keyset page resumes after them, so
rows written or removed between pages never shift, repeat or skip another —
and, for a listing with filters, the filters it was listed with: a token
used with other filters is refused (AIP-158), since its keys mean nothing
there. Callers must not parse a token; a malformed or forged one is
INVALID_ARGUMENT naming ``page_token``.

Tokens of the push service's earlier format (the parts joined by ``|``,
padded base64) are still read, so a client paging across the upgrade is not
refused; nothing issues them any more.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from services.common.errors import InvalidArgument
from services.common.validation import ID_PATTERN, int64_digits

FIELD = "page_token"
LEGACY_SEPARATOR = "|"


def _malformed() -> InvalidArgument:
    return InvalidArgument.one(FIELD, "not a token returned by this service")


def encode_page_token(*parts: str) -> str:
    """An opaque, URL-safe token holding ``parts``."""
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_page_token(token: str, arity: int) -> list[str] | None:
    """The ``arity`` parts a token holds; None for the first page (no token)."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError):
        raise _malformed() from None
    parts = _parts(text)
    if parts is None or len(parts) != arity:
        raise _malformed()
    return parts


def _parts(text: str) -> list[str] | None:
    try:
        parts = json.loads(text)
    except ValueError:
        # The push service's earlier tokens: the parts joined by "|" (never one part alone).
        return text.split(LEGACY_SEPARATOR) if LEGACY_SEPARATOR in text else None
    if isinstance(parts, list) and all(isinstance(part, str) for part in parts):
        return parts
    return None


def encode_keyset(after: tuple[datetime, str] | None, *filters: str) -> str:
    """The token of a keyset page that resumes after ``after`` (time, id), listed with ``filters``; "" at the end."""
    if after is None:
        return ""
    return encode_page_token(after[0].isoformat(), after[1], *filters)


def decode_keyset(token: str, *filters: str) -> tuple[datetime, str] | None:
    """Where a keyset page resumes: the (time, id) the token holds, checked against this call's ``filters``."""
    parts = decode_page_token(token, 2 + len(filters))
    if parts is None:
        return None
    at, last_id, *issued_for = parts
    try:
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None or not ID_PATTERN.match(last_id):
            raise ValueError(token)
        parsed = parsed.astimezone(UTC)  # a forged year 1 at +05:00 is before year 1 in UTC: OverflowError
    except (ValueError, OverflowError):
        raise _malformed() from None
    if issued_for != list(filters):
        raise InvalidArgument.one(FIELD, "issued for other filters; ask again without it")
    return parsed, last_id


def encode_position(position: int | None) -> str:
    """The token of a page that resumes after row number ``position`` (an id that only grows); "" at the end."""
    return "" if position is None else encode_page_token(str(position))


def decode_position(token: str) -> int | None:
    """The row number a page resumes after; None for the first page."""
    parts = decode_page_token(token, 1)
    if parts is None:
        return None
    position = int64_digits(parts[0])
    if position is None:
        raise _malformed()
    return position
