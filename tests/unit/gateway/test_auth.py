"""Bearer tokens: only HS256 tokens signed with the gateway's key, unexpired, with a known role."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway.auth import Principal, Role, mint_token, verify_token
from services.common.errors import PermissionDenied, Unauthenticated

SECRET = "s" * 40


def test_round_trip_names_the_principal() -> None:
    principal = Principal("m1", Role.STORE_MAIN, "s1")
    assert verify_token(SECRET, mint_token(SECRET, principal)) == principal


def test_expired_token_is_unauthenticated() -> None:
    token = mint_token(SECRET, Principal("c1", Role.CONSUMER), ttl_seconds=10, now=time.time() - 60)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_token(SECRET, token)


def test_token_signed_with_another_key_is_unauthenticated() -> None:
    token = mint_token("x" * 40, Principal("c1", Role.CONSUMER))
    with pytest.raises(Unauthenticated):
        verify_token(SECRET, token)


def test_alg_none_is_unauthenticated() -> None:
    claims = {"iss": "qun", "sub": "c1", "role": "ops", "iat": int(time.time()), "exp": int(time.time()) + 60}
    token = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        verify_token(SECRET, token)


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "emperor", "sub": "c1"},
        {"role": "store_main", "sub": "m1"},  # store roles must name their store
        {"role": "consumer", "sub": "bad id with spaces"},
    ],
)
def test_malformed_claims_are_unauthenticated(claims: dict[str, str]) -> None:
    now = int(time.time())
    token = jwt.encode({"iss": "qun", "iat": now, "exp": now + 60, **claims}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated):
        verify_token(SECRET, token)


def test_require_refuses_other_roles_citing_the_rule() -> None:
    with pytest.raises(PermissionDenied) as refused:
        Principal("m1", Role.STORE_SUB, "s1").require(Role.STORE_MAIN, rule_id="E1")
    assert refused.value.metadata["rules"] == "E1"
