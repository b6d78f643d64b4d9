"""Bearer tokens: only HS256 tokens signed with the gateway's key, unexpired, with a known role."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import grpc
import jwt
import pytest

from gateway.auth import (
    BearerAuthInterceptor,
    Principal,
    Role,
    VerifiedTokens,
    claims_of,
    mint_token,
    principal_var,
    verify_token,
)
from gateway.keys import SharedSecret
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


def test_a_kept_token_still_expires_when_its_exp_passes() -> None:
    tokens = VerifiedTokens(SharedSecret(SECRET))
    token = mint_token(SECRET, Principal("c1", Role.CONSUMER), ttl_seconds=1)
    assert tokens.principal(token) == Principal("c1", Role.CONSUMER)
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 0.01)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.principal(token)


def test_only_the_token_that_passed_is_kept_not_its_claims() -> None:
    tokens = VerifiedTokens(SharedSecret(SECRET))
    good = mint_token(SECRET, Principal("c1", Role.CONSUMER))
    tokens.principal(good)
    header, claims, signature = good.split(".")
    forged = ".".join((header, claims, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")))
    with pytest.raises(Unauthenticated):
        tokens.principal(forged)


def test_the_kept_tokens_are_bounded() -> None:
    now = [time.time()]
    tokens = VerifiedTokens(SharedSecret(SECRET), size=3, clock=lambda: now[0])
    minted = [mint_token(SECRET, Principal(f"c{i}", Role.CONSUMER)) for i in range(5)]
    for token in minted:
        tokens.principal(token)
    assert len(tokens) == 3 and [token in tokens for token in minted] == [False, False, True, True, True]


def test_local_tokens_last_an_hour() -> None:
    claims = claims_of(Principal("c1", Role.CONSUMER), now=1_000_000)
    assert (claims["iat"], claims["exp"]) == (1_000_000, 1_000_000 + 3600)


def test_a_principal_cannot_be_changed_once_bound() -> None:
    principal = Principal("c1", Role.CONSUMER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.role = Role.OPS  # type: ignore[misc]  # the point of the test
    assert {principal: 1}[Principal("c1", Role.CONSUMER)] == 1  # equal principals key one entry


def test_require_names_the_roles_allowed_or_the_reason_given() -> None:
    caller = Principal("c1", Role.CONSUMER)
    with pytest.raises(PermissionDenied, match=r"^this call is for ops, upstream; caller is consumer$"):
        caller.require(Role.OPS, Role.UPSTREAM)
    with pytest.raises(PermissionDenied, match=r"^only ops review pushes; caller is consumer$"):
        caller.require(Role.OPS, why="only ops review pushes")
    caller.require(Role.CONSUMER, Role.OPS)


def test_a_kept_token_answers_its_principal_every_time() -> None:
    tokens = VerifiedTokens(SharedSecret(SECRET))
    token = mint_token(SECRET, Principal("m1", Role.STORE_MAIN, "s1"))
    assert tokens.principal(token) == tokens.principal(token) == Principal("m1", Role.STORE_MAIN, "s1")


def test_a_kept_token_is_expired_at_its_exp_exactly_as_verification_holds() -> None:
    token = mint_token(SECRET, Principal("c1", Role.CONSUMER), ttl_seconds=1)
    expires = float(jwt.decode(token, options={"verify_signature": False})["exp"])
    now = [expires - 1]
    tokens = VerifiedTokens(SharedSecret(SECRET), clock=lambda: now[0])
    tokens.principal(token)
    now[0] = expires
    time.sleep(max(0.0, expires - time.time()) + 0.01)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.principal(token)


class Metadatum:
    def __init__(self, key: str, value: str) -> None:
        self.key, self.value = key, value


class CallContext:
    def __init__(self, authorization: str | None) -> None:
        self.metadata = () if authorization is None else (Metadatum("authorization", authorization),)
        self.aborted: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[Metadatum, ...]:
        return self.metadata

    async def abort_with_status(self, status: Any) -> None:
        self.aborted = status.code
        raise RuntimeError("aborted")


async def authenticated(authorization: str | None) -> Principal | grpc.StatusCode | None:
    seen: list[Principal] = []

    async def call(request: object, context: object) -> None:
        seen.append(principal_var.get())

    context = CallContext(authorization)
    try:
        await BearerAuthInterceptor(SharedSecret(SECRET)).around(None, None, context, call)
    except RuntimeError:
        return context.aborted
    return seen[0]


async def test_only_a_bearer_header_with_a_token_authenticates() -> None:
    principal = Principal("c1", Role.CONSUMER)
    token = mint_token(SECRET, principal)
    assert await authenticated(f"Bearer {token}") == principal
    assert await authenticated(f"bearer {token}") == principal  # the scheme is case-insensitive (RFC 7235)
    for header in (f"Basic {token}", "Bearer ", "Bearer", token, None):
        assert await authenticated(header) is grpc.StatusCode.UNAUTHENTICATED, header
