"""The kinds of push, declared once: each kind's rule, audience, quota and tier (SPEC P1, P2, P5).

A plain module (no I/O), so every layer reads the same table: the rules
(``rules.RULE_OF_KIND``, ``RECALL_KINDS``), the servicer's validation and
conversions (a kind's proto value is ``PUSH_KIND_<NAME>`` in the internal and
the public contract alike), the repositories (how a kind spends and returns
its quota), the metrics' labels, and the gateway (the rule it cites, the
audience it streams from the eligibility service, named there
``PUSH_AUDIENCE_<AUDIENCE>``).

A new kind is a member of ``PushKind`` and a row of ``DECLARATIONS`` here,
its enum value in the two protos, and — when it brings a rule of its own —
its conditions in ``rules``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PushKind(StrEnum):
    SUBSCRIPTION = "subscription"
    RECALL_TIER_1 = "recall_tier_1"
    RECALL_TIER_2 = "recall_tier_2"
    MASS_SEND = "mass_send"

    @property
    def tier(self) -> int:
        """1 or 2 for recall pushes, 0 otherwise."""
        return declaration(self).tier

    @property
    def rule_id(self) -> str:
        return declaration(self).rule_id


class Audience(StrEnum):
    """Who a kind of push reaches; the eligibility service streams it (its ``PUSH_AUDIENCE_<NAME>``)."""

    SUBSCRIBERS = "subscribers"  # the account's subscribed fans (P1)
    RECALL = "recall"  # old customers who do not follow, most recent buyers first (P2, P3)
    FANS = "fans"  # the store's followers (P5)


class Quota(StrEnum):
    """How a kind of push spends its quota, and how a rejection or cancellation gives it back (P6)."""

    INTERVAL = "interval"  # one per interval since the last counted submission (P1)
    YEARLY_SLOT = "yearly_slot"  # one per tier per calendar year: a ``recall_slots`` row (P2)
    GRANT = "grant"  # one message per grant, named by ``grant_id`` (P5)


@dataclass(frozen=True)
class PushKindDeclaration:
    kind: PushKind
    rule_id: str
    audience: Audience
    quota: Quota
    tier: int = 0

    @property
    def proto_name(self) -> str:
        """The kind's value in ``qun.push.v1.PushKind`` and ``qun.gateway.v1.PushKind``."""
        return f"PUSH_KIND_{self.kind.name}"

    @property
    def takes_grant(self) -> bool:
        """Whether a push of this kind names a grant (``grant_id``); no other kind may."""
        return self.quota is Quota.GRANT

    @property
    def words(self) -> str:
        """The kind as a refusal names it ("mass-send")."""
        return self.kind.value.replace("_", "-")


DECLARATIONS: tuple[PushKindDeclaration, ...] = (
    PushKindDeclaration(PushKind.SUBSCRIPTION, "P1", Audience.SUBSCRIBERS, Quota.INTERVAL),
    PushKindDeclaration(PushKind.RECALL_TIER_1, "P2", Audience.RECALL, Quota.YEARLY_SLOT, tier=1),
    PushKindDeclaration(PushKind.RECALL_TIER_2, "P2", Audience.RECALL, Quota.YEARLY_SLOT, tier=2),
    PushKindDeclaration(PushKind.MASS_SEND, "P5", Audience.FANS, Quota.GRANT),
)
_BY_KIND = {d.kind: d for d in DECLARATIONS}


def declaration(kind: PushKind) -> PushKindDeclaration:
    return _BY_KIND[kind]


def kinds_with(quota: Quota) -> tuple[PushKind, ...]:
    """The kinds that spend their quota this way, in declaration order."""
    return tuple(d.kind for d in DECLARATIONS if d.quota is quota)


def grant_misuse(kind: PushKind, grant_id: str) -> str | None:
    """Why ``grant_id`` cannot go with a push of ``kind`` (a malformed request), or None.

    Naming no grant on a kind that takes one is not malformed: that is the
    kind's rule refusing (P5's ``NO_MASS_SEND_GRANT``, FAILED_PRECONDITION).
    """
    if not grant_id or declaration(kind).takes_grant:
        return None
    takers = [d for d in DECLARATIONS if d.takes_grant]
    names = " or ".join(d.words for d in takers)
    rules = ", ".join(dict.fromkeys(d.rule_id for d in takers))
    return f"only a {names} push uses a grant ({rules})"
