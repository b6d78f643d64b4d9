"""Input checks that collect every bad field before refusing.

A servicer validates its whole request with one ``Fields`` and calls
``done()``; the caller then gets one INVALID_ARGUMENT naming every bad field,
and nothing malformed reaches the database.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import FieldViolation, InvalidArgument
from services.common.timestamps import from_timestamp

if TYPE_CHECKING:
    from services.common.rules import BoundsRules

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
ID_RULE = "1-64 characters of letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
MAX_NAME_CHARS = 64
MAX_TEXT_CHARS = 2000
MAX_PAGE_SIZE = 500
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
MAX_TIMESTAMP_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
# Months and days a caller names (a marketplace month ``YYYY-MM``, a day ``YYYY-MM-DD``) lie in the years a
# timestamp field holds, so every period named can also be written as the instants it spans.
FIRST_YEAR, LAST_YEAR = 1970, 9999
MONTH_PATTERN = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")
DAY_PATTERN = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


EnumValue = TypeVar("EnumValue", bound=int)  # a generated enum's ValueType, or a plain number


def int64_digits(text: str) -> int | None:
    """The number ``text`` writes in ASCII digits, when a signed 64-bit field holds it; else None.

    For numbers read back from tokens and cursors a caller hands in: ``str.isdigit`` alone admits "²"
    (which ``int`` refuses), and ``int`` alone admits numbers no column or field holds.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_INT64)):
        return None
    value = int(text)
    return value if value <= MAX_INT64 else None


class Fields:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def identifier(self, field: str, value: str, *, required: bool = True) -> str:
        if not value:
            if required:
                self.fail(field, "required")
        elif not ID_PATTERN.match(value):
            self.fail(field, f"must be {ID_RULE}")
        return value

    def text(self, field: str, value: str, *, max_chars: int = MAX_TEXT_CHARS, required: bool = False) -> str:
        if required and not value.strip():
            self.fail(field, "required")
        elif len(value) > max_chars:
            self.fail(field, f"at most {max_chars} characters, got {len(value)}")
        elif "\x00" in value:
            self.fail(field, "must not contain NUL characters")
        return value

    def enum(self, field: str, value: EnumValue, enum: Any, allowed: Collection[int] | None = None) -> EnumValue:
        """``value`` one of ``enum``'s numbers (a generated enum's class: mypy-protobuf types its ``values`` and
        ``Name`` on a metaclass, which no protocol matches, hence ``Any``), and one of ``allowed`` when given."""
        if value == 0:
            self.fail(field, "required")
        elif value not in enum.values():
            self.fail(field, f"unknown value {value}")
        elif allowed is not None and value not in allowed:
            names = ", ".join(enum.Name(v) for v in allowed)
            self.fail(field, f"must be one of {names}")
        return value

    def in_range(self, field: str, value: int, low: int, high: int) -> int:
        if not low <= value <= high:
            self.fail(field, f"must be between {low} and {high}, got {value}")
        return value

    def positive(self, field: str, value: int, *, high: int = MAX_INT64) -> int:
        if value <= 0:
            self.fail(field, f"must be positive, got {value}")
        elif value > high:
            self.fail(field, f"at most {high}, got {value}")
        return value

    def month(self, field: str, value: str, *, required: bool = True) -> str | None:
        """A marketplace month, ``YYYY-MM``, from 1970-01 to 9999-12; None when absent or not one."""
        if not value:
            if required:
                self.fail(field, "required")
            return None
        found = MONTH_PATTERN.match(value)
        if found is None or not FIRST_YEAR <= int(found[1]) <= LAST_YEAR:
            self.fail(field, f"must be a month YYYY-MM from {FIRST_YEAR}-01 to {LAST_YEAR}-12, got {value!r}")
            return None
        return value

    def day(self, field: str, value: str, *, required: bool = True) -> str | None:
        """A calendar day that exists, ``YYYY-MM-DD``, from 1970-01-01 to 9999-12-31 (no February 30); None when
        absent or not one."""
        if not value:
            if required:
                self.fail(field, "required")
            return None
        try:
            found = date.fromisoformat(value) if DAY_PATTERN.match(value) else None
        except ValueError:
            found = None
        if found is None or found.year < FIRST_YEAR:
            self.fail(
                field, f"must be a calendar day YYYY-MM-DD from {FIRST_YEAR}-01-01 to {LAST_YEAR}-12-31, got {value!r}"
            )
            return None
        return value

    def instant(self, field: str, stamp: Timestamp | None) -> datetime | None:
        """A timestamp as an aware UTC datetime; None (and a violation) when absent or out of range."""
        if stamp is None:
            self.fail(field, "required")
            return None
        if not 0 < stamp.seconds <= MAX_TIMESTAMP_SECONDS or not 0 <= stamp.nanos < 1_000_000_000:
            self.fail(field, "must be a valid time between 1970 and 9999")
            return None
        return from_timestamp(stamp)

    def instant_field(self, holder: Message, name: str, prefix: str = "") -> datetime | None:
        """The timestamp field ``name`` of ``holder`` (required), reported as ``prefix + name``."""
        present = holder.HasField(name)
        return self.instant(prefix + name, getattr(holder, name) if present else None)

    def within_bound(self, field: str, value: int, bounds: BoundsRules, bound: str) -> int:
        """D2: a count or amount from 1 up to its ``[bounds]`` value, the bound named in the refusal."""
        high = int(getattr(bounds, bound))
        if value <= 0:
            self.fail(field, f"must be positive, got {value}")
        elif value > high:
            self.fail(field, f"at most {high:,} (bounds.{bound}), got {value:,}")
        return value

    def page_size(self, field: str, value: int, default: int = 50) -> int:
        if value < 0:
            self.fail(field, f"must not be negative, got {value}")
            return default
        return min(value or default, MAX_PAGE_SIZE)

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)


def require_ids(request: Message, *names: str, optional: Collection[str] = ()) -> None:
    """Each named field of ``request`` present and a well-formed id (each ``optional`` one well-formed if set);
    INVALID_ARGUMENT naming every one that is not.

    The opening of most calls that name their records by id, said once.
    """
    fields = _ids(request, names, optional)
    fields.done()


def require_page(request: Message, *names: str, optional: Collection[str] = (), default: int = 50) -> int:
    """``require_ids`` for a listing call, its ``page_size`` checked with the ids; the page size to read."""
    fields = _ids(request, names, optional)
    limit = fields.page_size("page_size", getattr(request, "page_size"), default)
    fields.done()
    return limit


def _ids(request: Message, names: Collection[str], optional: Collection[str]) -> Fields:
    fields = Fields()
    for name in names:
        fields.identifier(name, getattr(request, name))
    for name in optional:
        fields.identifier(name, getattr(request, name), required=False)
    return fields
