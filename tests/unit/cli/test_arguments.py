"""qunctl refuses, before it mints or calls anything, what the gateway would refuse in a token."""

from __future__ import annotations

import pytest

from cli.qunctl import MAX_TOKEN_TTL_SECONDS, parser


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["token", "--as", "", "--role", "ops"], "argument --as: must be 1-64 characters"),
        (["token", "--as", "a b", "--role", "ops"], "argument --as: must be 1-64 characters"),
        (["token", "--as", "m1", "--role", "store_main", "--store", "s/1"], "argument --store: must be"),
        (["token", "--as", "m1", "--role", "ops", "--ttl", "-5"], "argument --ttl: must be 1 to"),
        (["token", "--as", "m1", "--role", "ops", "--ttl", "0"], "argument --ttl: must be 1 to"),
        (["token", "--as", "m1", "--role", "ops", "--ttl", str(MAX_TOKEN_TTL_SECONDS + 1)], "argument --ttl"),
        (["call", "GroupService/GetGroupSet", "--as", "x" * 65, "--role", "ops"], "argument --as: must be"),
    ],
)
def test_a_token_the_gateway_would_refuse_is_not_minted(args: list[str], says: str, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as stopped:
        parser().parse_args(args)
    assert stopped.value.code == 2 and says in capsys.readouterr().err


def test_the_largest_lifetime_and_an_id_at_its_longest_are_taken() -> None:
    parsed = parser().parse_args(["token", "--as", "m" * 64, "--role", "ops", "--ttl", str(MAX_TOKEN_TTL_SECONDS)])
    assert (parsed.account, parsed.ttl) == ("m" * 64, MAX_TOKEN_TTL_SECONDS)
