"""Ids the services mint for their rows: ``<prefix>_<16 hex digits>``.

Random rather than sequential, so ids reveal no counts and replicas mint them
without coordination; the prefix says what an id names (``gs`` a group-set,
``pur`` a purchase …) in logs and support tickets. 64 random bits make a
collision within one store's rows negligible, and the primary key refuses
one anyway.
"""

from __future__ import annotations

import secrets

RANDOM_BYTES = 8


def new_id(prefix: str) -> str:
    """A fresh id for a row of the kind ``prefix`` names."""
    return f"{prefix}_{secrets.token_hex(RANDOM_BYTES)}"
