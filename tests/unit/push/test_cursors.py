"""StreamDeliveries' cursor and the campaigns listing's page token: what a caller hands back is checked, never
raised as an error later (a forged number is INVALID_ARGUMENT, not INTERNAL)."""

from __future__ import annotations

import base64

import pytest

from gateway.campaigns import page_token, seq_from_token
from services.common.errors import InvalidArgument
from services.common.validation import Fields
from services.push.convert import parse_cursor


def test_a_cursor_this_service_issued_is_read() -> None:
    f = Fields()
    assert parse_cursor(f, f"{2**63 - 1}/c1") == (2**63 - 1, "c1")
    assert parse_cursor(f, "") == (0, "")
    f.done()


@pytest.mark.parametrize("forged", ["²/c1", "9" * 19 + "/c1", f"{2**63}/c1", "-1/c1", "1/c 1", "x"])
def test_a_forged_cursor_is_invalid_argument(forged: str) -> None:
    f = Fields()
    parse_cursor(f, forged)
    with pytest.raises(InvalidArgument):
        f.done()


def test_the_gateways_sequence_token_reads_what_it_wrote_and_refuses_forged_numbers() -> None:
    assert seq_from_token(page_token(2**63 - 1)) == 2**63 - 1 and seq_from_token("") == 0
    for forged in ("seq:²", f"seq:{2**63}", "seq:-1", "other:1"):
        token = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
        with pytest.raises(InvalidArgument):
            seq_from_token(token)
