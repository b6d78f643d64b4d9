"""Who is calling: signed bearer tokens (JWT) naming a principal.

The gateway verifies every call's token and binds the principal for the
servicer. The keys it checks with (``gateway.keys``) are public keys in
production (ES256/RS256 from a JWKS, chosen by ``kid``), or the local stack's
shared secret (HS256), with which the CLI and tests mint tokens. Only the
algorithms of the configured keys are accepted, so an ``alg: none`` token,
an HS256 token where public keys are configured, one signed with another key
and an expired one are UNAUTHENTICATED.
"""

from __future__ import annotations

import contextvars
import enum
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from gateway.caches import Kept
from gateway.keys import SharedSecret, TokenKeys
from services.common.errors import PermissionDenied, Unauthenticated
from services.common.interceptors import Interceptor, MethodInfo, Streaming, Unary, abort_with, metadata_value
from services.common.logs import actor_var
from services.common.validation import ID_PATTERN

ALGORITHM = "HS256"
ISSUER = "qun"
DEFAULT_TTL_SECONDS = 3600
AUTHORIZATION_HEADER = "authorization"


class Role(enum.StrEnum):
    STORE_MAIN = "store_main"
    STORE_SUB = "store_sub"
    STREAMER = "streamer"
    CONSUMER = "consumer"
    OPS = "ops"
    UPSTREAM = "upstream"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    store_id: str = ""

    def require(self, *roles: Role, rule_id: str = "", why: str = "") -> None:
        """PERMISSION_DENIED unless the principal plays one of ``roles``."""
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            text = why or f"this call is for {allowed}"
            raise PermissionDenied(f"{text}; caller is {self.role.value}", rule_id=rule_id)


principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    return principal_var.get()


def mint_token(
    secret: str, principal: Principal, *, ttl_seconds: int = DEFAULT_TTL_SECONDS, now: float | None = None
) -> str:
    """A local-stack token (HS256 with the shared secret), as the CLI and tests mint them."""
    return jwt.encode(claims_of(principal, ttl_seconds, now), secret, algorithm=ALGORITHM)


def claims_of(principal: Principal, ttl_seconds: int = DEFAULT_TTL_SECONDS, now: float | None = None) -> dict[str, Any]:
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": principal.subject,
        "role": principal.role.value,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if principal.store_id:
        claims["store"] = principal.store_id
    return claims


def verify_token(secret: str, token: str) -> Principal:
    return _verify(SharedSecret(secret), token)[0]


def _verify(keys: TokenKeys, token: str) -> tuple[Principal, float]:
    """The token's principal and its expiry (``exp``, seconds since the epoch)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as error:
        raise Unauthenticated(f"invalid token: {error}") from None
    algorithm = header.get("alg")
    if algorithm not in keys.algorithms:
        raise Unauthenticated(f"invalid token: {algorithm} is not accepted here ({', '.join(keys.algorithms)})")
    try:
        claims = jwt.decode(
            token,
            keys.key_for(header),
            algorithms=[algorithm],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except jwt.InvalidTokenError as error:
        raise Unauthenticated(f"invalid token: {error}") from None
    try:
        role = Role(claims.get("role", ""))
    except ValueError:
        raise Unauthenticated("invalid token: unknown role") from None
    subject = str(claims["sub"])
    store_id = str(claims.get("store", ""))
    if not ID_PATTERN.match(subject) or (store_id and not ID_PATTERN.match(store_id)):
        raise Unauthenticated("invalid token: malformed subject or store")
    if role in (Role.STORE_MAIN, Role.STORE_SUB) and not store_id:
        raise Unauthenticated("invalid token: store roles name their store")
    return Principal(subject, role, store_id), float(claims["exp"])


class VerifiedTokens:
    """Tokens already verified, each kept until it expires (at most ``size`` of them, least recently used out).

    A client presents the same token on every call, and checking its signature
    and claims each time would cost a short call more than its own work (ADR 0011).
    The key is the whole token, signature included, so only a token that
    passed is ever found here; its expiry is checked on every use as the
    verification would (valid while now < exp).
    """

    def __init__(self, keys: TokenKeys, size: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._clock = clock
        self._kept: Kept[str, tuple[Principal, float]] = Kept(size)

    def principal(self, token: str) -> Principal:
        kept = self._kept.get(token)
        if kept is not None:
            if self._clock() < kept[1]:
                return kept[0]
            self._kept.drop(token)
        principal, expires = _verify(self._keys, token)
        self._kept.put(token, (principal, expires))
        return principal

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, token: object) -> bool:
        return token in self._kept


class BearerAuthInterceptor(Interceptor):
    """UNAUTHENTICATED without a valid token; binds the principal otherwise."""

    def __init__(self, keys: TokenKeys) -> None:
        super().__init__()
        self._tokens = VerifiedTokens(keys)

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        header = metadata_value(context, AUTHORIZATION_HEADER)
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("missing bearer token")
            return self._tokens.principal(token.strip())
        except Unauthenticated as error:
            await abort_with(context, error)
            raise  # unreachable: abort raises

    async def around(self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Unary) -> Any:
        principal = await self._authenticate(context)
        bound, acting = principal_var.set(principal), actor_var.set(principal.subject)
        try:
            return await call(request, context)
        finally:
            actor_var.reset(acting)
            principal_var.reset(bound)

    async def around_stream(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Streaming
    ) -> AsyncIterator[Any]:
        principal = await self._authenticate(context)
        bound, acting = principal_var.set(principal), actor_var.set(principal.subject)
        try:
            async for item in call(request, context):
                yield item
        finally:
            actor_var.reset(acting)
            principal_var.reset(bound)
