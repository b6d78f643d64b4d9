"""One page-token format for every listing: round trips, filters, forged and earlier tokens."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidArgument
from services.common.page_tokens import (
    decode_keyset,
    decode_page_token,
    decode_position,
    encode_keyset,
    encode_page_token,
    encode_position,
)
from services.common.validation import int64_digits

AT = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)


def test_a_keyset_token_resumes_after_what_it_names() -> None:
    assert decode_keyset(encode_keyset((AT, "ps_1"))) == (AT, "ps_1")
    assert decode_keyset(encode_keyset((AT, "ps_1"), "2", "s1"), "2", "s1") == (AT, "ps_1")
    assert encode_keyset(None) == "" and decode_keyset("") is None


def test_a_token_is_refused_with_other_filters() -> None:
    token = encode_keyset((AT, "ps_1"), "2", "s1")
    with pytest.raises(InvalidArgument, match="other filters"):
        decode_keyset(token, "2", "s2")
    with pytest.raises(InvalidArgument, match="not a token"):
        decode_keyset(token)  # issued with filters, used without


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        encode_page_token("2026-03-01T08:30:15", "ps_1"),  # no time zone
        encode_page_token("0001-01-01T00:00:00+05:00", "ps_1"),  # before year 1 in UTC
        encode_page_token(AT.isoformat(), "bad id!"),
    ],
)
def test_a_forged_token_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        decode_keyset(token)
    assert refused.value.violations[0].field == "page_token"


def test_the_push_services_earlier_tokens_are_still_read() -> None:
    listing = base64.urlsafe_b64encode(f"{AT.isoformat()}|ps_1".encode()).decode()
    queue = base64.urlsafe_b64encode(f"{AT.isoformat()}|ps_1|2|s1".encode()).decode()
    assert decode_keyset(listing) == (AT, "ps_1")
    assert decode_keyset(queue, "2", "s1") == (AT, "ps_1")


@pytest.mark.parametrize("forged", ["²", "١٢", "9" * 30, str(2**63), "-1", " 1", ""])
def test_a_forged_position_is_malformed_not_an_error_later(forged: str) -> None:
    """A number no key holds, or digits that are not ASCII, never reach the database (where they would fail)."""
    with pytest.raises(InvalidArgument):
        decode_position(encode_page_token(forged))


def test_the_largest_position_a_key_holds_is_read() -> None:
    assert decode_position(encode_position(2**63 - 1)) == 2**63 - 1


def test_positions_and_plain_parts() -> None:
    assert decode_position(encode_position(42)) == 42 and encode_position(None) == ""
    assert decode_page_token(encode_page_token("gs_1"), 1) == ["gs_1"]
    with pytest.raises(InvalidArgument):
        decode_position(encode_page_token("x"))
    with pytest.raises(InvalidArgument):
        decode_page_token(encode_page_token("a", "b"), 1)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("0", 0),
        ("42", 42),
        (str(2**63 - 1), 2**63 - 1),
        (str(2**63), None),
        ("9" * 40, None),
        ("²", None),
        ("١٢", None),
        ("-1", None),
        ("+1", None),
        ("1.0", None),
        ("", None),
    ],
)
def test_int64_digits_reads_only_what_a_64_bit_field_holds(text: str, number: int | None) -> None:
    assert int64_digits(text) == number
