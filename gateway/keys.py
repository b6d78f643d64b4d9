"""The keys bearer tokens are checked with: public keys (ES256, RS256) in production, a shared secret locally.

With a shared secret (HS256) anyone who can check a token can also mint one,
an ``ops`` token included; so production gateways take public keys only: a
JWKS document (``QUN_JWKS_FILE`` or ``QUN_JWKS_URL``) whose keys are chosen
by the token's ``kid``. Once public keys are configured, HS256 is refused
whatever secret is set; the shared secret (``QUN_TOKEN_SECRET``) is for the
local stack, whose CLI mints its own tokens.

Keys rotate without a restart: a JWKS file is read again when it changes; a
JWKS URL is fetched again every ``JWKS_REFRESH_SECONDS`` and at once when a
token names a ``kid`` not seen yet (at most every ``UNKNOWN_KID_REFETCH_SECONDS``,
so a stream of made-up kids cannot hammer the key server).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jwt

from services.common.errors import Unauthenticated

log = logging.getLogger("qun.gateway.keys")

PUBLIC_ALGORITHMS = ("ES256", "RS256")
SHARED_ALGORITHM = "HS256"
JWKS_REFRESH_SECONDS = 300.0
UNKNOWN_KID_REFETCH_SECONDS = 30.0


class TokenKeys(Protocol):
    """What checks a token: the algorithms it accepts and the key for a token's header."""

    @property
    def algorithms(self) -> tuple[str, ...]: ...

    def key_for(self, header: dict[str, Any]) -> Any: ...


class SharedSecret:
    """HS256 with the local stack's secret."""

    algorithms = (SHARED_ALGORITHM,)

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def key_for(self, header: dict[str, Any]) -> Any:
        return self._secret


class PublicKeys:
    """ES256/RS256 keys of a JWKS document, by ``kid``, read again as the document changes."""

    algorithms = PUBLIC_ALGORITHMS

    def __init__(
        self, load: Callable[[], str], *, changed: Callable[[], bool], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._load = load
        self._changed = changed
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._last_unknown_fetch = float("-inf")
        self._refresh()

    @classmethod
    def from_file(cls, path: Path) -> PublicKeys:
        state = {"mtime": -1}

        def changed() -> bool:
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                return False
            if mtime == state["mtime"]:
                return False
            state["mtime"] = mtime
            return True

        changed()
        return cls(lambda: path.read_text(encoding="utf-8"), changed=changed)

    @classmethod
    def from_url(cls, url: str, *, clock: Callable[[], float] = time.monotonic) -> PublicKeys:
        import urllib.request

        state = {"fetched": clock()}

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - an https URL from ops
                return str(response.read().decode("utf-8"))

        def changed() -> bool:
            if clock() - state["fetched"] < JWKS_REFRESH_SECONDS:
                return False
            state["fetched"] = clock()
            return True

        return cls(fetch, changed=changed, clock=clock)

    def _refresh(self) -> None:
        """Reads the document; raises when it cannot be read or holds no usable key (the caller decides)."""
        document = json.loads(self._load())
        keys: dict[str, Any] = {}
        for entry in document.get("keys", []):
            kid, algorithm = entry.get("kid"), entry.get("alg")
            if not kid or algorithm not in PUBLIC_ALGORITHMS:
                continue  # keys without a kid cannot be chosen; HS keys are never taken from a JWKS
            keys[kid] = jwt.PyJWK(entry).key
        if not keys:
            raise ValueError("the JWKS has no ES256 or RS256 key with a kid")
        self._keys = keys

    def _try_refresh(self) -> None:
        """A document that cannot be read now (a half-written file, the key server away) keeps the keys known."""
        try:
            self._refresh()
        except Exception as error:  # noqa: BLE001 - any failure keeps serving with the known keys
            log.warning("JWKS not reloaded; the known keys stay", extra={"fields": {"error": str(error)[:200]}})

    def key_for(self, header: dict[str, Any]) -> Any:
        kid = header.get("kid")
        if not kid:
            raise Unauthenticated("invalid token: no kid")
        with self._lock:
            if self._changed():
                self._try_refresh()
            key = self._keys.get(kid)
            if key is None and self._clock() - self._last_unknown_fetch >= UNKNOWN_KID_REFETCH_SECONDS:
                self._last_unknown_fetch = self._clock()
                self._try_refresh()  # a key just rotated in
                key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("invalid token: unknown kid")
        return key
