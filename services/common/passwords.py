"""Salted digests of group passwords (SPEC C9 password threshold).

The groups service stores only the digest; the eligibility service verifies
what a consumer typed against it. Both sides use these two functions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALGORITHM = "pbkdf2_sha256"
# Group passwords are shared codes, checked on every join: a modest work factor.
ITERATIONS = 2_000


def digest(password: str, *, salt: str | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or secrets.token_hex(8)
    derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"{ALGORITHM}${iterations}${salt}${derived.hex()}"


def verify(password: str, stored: str) -> bool:
    try:
        algorithm, iterations, salt, _ = stored.split("$")
        rounds = int(iterations)
    except ValueError:
        return False
    if algorithm != ALGORITHM or not 1 <= rounds <= 1_000_000:
        return False
    return hmac.compare_digest(digest(password, salt=salt, iterations=rounds), stored)
