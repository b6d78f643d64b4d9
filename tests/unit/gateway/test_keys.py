"""Keys nobody can forge: tokens checked with public keys from a JWKS, by kid, rotated without a restart."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import Principal, Role, VerifiedTokens, claims_of, mint_token
from gateway.keys import PublicKeys, SharedSecret
from gateway.settings import token_keys
from services.common.errors import Unauthenticated
from services.common.settings import SettingsError

OPS = Principal("ops-1", Role.OPS)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(private: object, kid: str) -> dict[str, object]:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        entry["alg"] = "ES256"
    else:
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))  # type: ignore[attr-defined]
        entry["alg"] = "RS256"
    return {**entry, "kid": kid, "use": "sig"}


def write_jwks(path: Path, *entries: dict[str, object]) -> None:
    path.write_text(json.dumps({"keys": list(entries)}))
    stamp = time.time_ns() + 1_000_000
    os.utime(path, ns=(stamp, stamp))  # a new mtime even within the filesystem's resolution


def token(private: object, kid: str, algorithm: str, principal: Principal = OPS) -> str:
    return jwt.encode(claims_of(principal), private, algorithm=algorithm, headers={"kid": kid})  # type: ignore[arg-type]


def test_es256_and_rs256_tokens_are_checked_with_the_key_their_kid_names(tmp_path: Path) -> None:
    signer, other = ec_key(), rsa_key()
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, jwk(signer, "ec-1"), jwk(other, "rsa-1"))
    tokens = VerifiedTokens(PublicKeys.from_file(jwks))
    assert tokens.principal(token(signer, "ec-1", "ES256")) == OPS
    assert tokens.principal(token(other, "rsa-1", "RS256")) == OPS
    for forged in (
        token(ec_key(), "ec-1", "ES256"),  # signed with another key under a known kid
        token(signer, "ec-9", "ES256"),  # a kid nobody published
        token(signer, "", "ES256"),
    ):
        with pytest.raises(Unauthenticated):
            tokens.principal(forged)


def test_hs256_is_refused_once_public_keys_are_configured(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, jwk(ec_key(), "ec-1"))
    keys = token_keys({"QUN_JWKS_FILE": str(jwks), "QUN_TOKEN_SECRET": "local-secret-0123456789abcdef"})
    assert isinstance(keys, PublicKeys)
    local = mint_token("local-secret-0123456789abcdef", OPS)
    with pytest.raises(Unauthenticated, match="HS256 is not accepted"):
        VerifiedTokens(keys).principal(local)
    none = jwt.encode(claims_of(OPS), None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        VerifiedTokens(keys).principal(none)
    assert isinstance(token_keys({"QUN_TOKEN_SECRET": "local-secret-0123456789abcdef"}), SharedSecret)


def test_keys_rotate_without_a_restart(tmp_path: Path) -> None:
    old, new = ec_key(), ec_key()
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, jwk(old, "k1"))
    tokens = VerifiedTokens(PublicKeys.from_file(jwks))
    assert tokens.principal(token(old, "k1", "ES256")) == OPS
    write_jwks(jwks, jwk(old, "k1"), jwk(new, "k2"))  # the new key published beside the old
    assert tokens.principal(token(new, "k2", "ES256")) == OPS
    write_jwks(jwks, jwk(new, "k2"))  # the old one withdrawn
    with pytest.raises(Unauthenticated, match="unknown kid"):
        VerifiedTokens(PublicKeys.from_file(jwks)).principal(token(old, "k1", "ES256"))
    jwks.write_text("{ half written")  # a broken document keeps the keys known
    assert tokens.principal(token(new, "k2", "ES256", Principal("u", Role.UPSTREAM))).subject == "u"


def test_a_jwks_without_usable_keys_stops_the_gateway(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "x"}]}))
    with pytest.raises(SettingsError, match="no ES256 or RS256 key"):
        token_keys({"QUN_JWKS_FILE": str(jwks)})
    with pytest.raises(SettingsError, match="not both"):
        token_keys({"QUN_JWKS_FILE": str(jwks), "QUN_JWKS_URL": "https://keys.example/jwks"})
    with pytest.raises(SettingsError, match="https"):
        token_keys({"QUN_JWKS_URL": "http://keys.example/jwks"})
