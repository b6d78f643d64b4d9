"""Between the wire and the domain: the account's figures, pushes, notices, grants and ledger cursors."""

from __future__ import annotations

from qun.push.v1 import push_pb2
from services.common.messages import message_from
from services.common.validation import ID_PATTERN, MAX_INT32, Fields, int64_digits
from services.push.kinds import DECLARATIONS
from services.push.models import GrantRow, NoticeRow, PushRow
from services.push.repository import facts_from_json
from services.push.rules import AccountFacts, PushKind, PushState

# Not callers' values, so not [bounds] (D2): the figures the eligibility service counted from facts it validated
# (a sanity limit, far above any store) and a rate's 100% (fixed by definition; the gateway refuses more in a
# reported fact).
MAX_FIGURE = 10**12
MAX_RATE_BP = 10_000

# Each declared kind by its value in the contract (``kinds``: ``PUSH_KIND_<NAME>``).
KINDS: dict[int, PushKind] = {push_pb2.PushKind.Value(d.proto_name): d.kind for d in DECLARATIONS}
KIND_PROTOS = {kind: push_pb2.PushKind.ValueType(value) for value, kind in KINDS.items()}
STATE_PROTOS: dict[PushState, push_pb2.PushState.ValueType] = {
    PushState.DRAFT: push_pb2.PUSH_STATE_DRAFT,
    PushState.DISCARDED: push_pb2.PUSH_STATE_UNSPECIFIED,
    PushState.PENDING_REVIEW: push_pb2.PUSH_STATE_PENDING_REVIEW,
    PushState.APPROVED: push_pb2.PUSH_STATE_APPROVED,
    PushState.SENDING: push_pb2.PUSH_STATE_SENDING,
    PushState.SENT: push_pb2.PUSH_STATE_SENT,
    PushState.REJECTED: push_pb2.PUSH_STATE_REJECTED,
    PushState.CANCELLED: push_pb2.PUSH_STATE_CANCELLED,
}


def parse_facts(f: Fields, msg: push_pb2.AccountFacts, present: bool) -> AccountFacts:
    if not present:
        f.fail("facts", "required: the account's figures from the eligibility service")
        return AccountFacts()
    f.in_range("facts.subscribers", int(msg.subscribers), 0, MAX_FIGURE)
    f.in_range("facts.old_customer_fans", int(msg.old_customer_fans), 0, MAX_FIGURE)
    f.in_range("facts.recent_broadcasts", msg.recent_broadcasts, 0, MAX_INT32)
    rate = msg.revisit_rate_bp if msg.HasField("revisit_rate_bp") else None
    if rate is not None:
        f.in_range("facts.revisit_rate_bp", rate, 0, MAX_RATE_BP)
    return AccountFacts(int(msg.subscribers), int(msg.old_customer_fans), msg.recent_broadcasts, rate)


def facts_to_proto(facts: AccountFacts) -> push_pb2.AccountFacts:
    return message_from(push_pb2.AccountFacts, facts)


def push_to_proto(row: PushRow) -> push_pb2.Push:
    return message_from(
        push_pb2.Push,
        row,
        # A row this version cannot read (written past its checks) shows as unspecified rather than failing the
        # whole answer: one store's bad row must not break ops' queue across stores (SPEC D3, P8).
        kind=KIND_PROTOS.get(row.kind, push_pb2.PUSH_KIND_UNSPECIFIED),  # type: ignore[call-overload]  # the enum names match the protos (tests/unit/push/test_kinds.py)
        state=STATE_PROTOS.get(row.state, push_pb2.PUSH_STATE_UNSPECIFIED),  # type: ignore[call-overload]  # the enum names match the protos (tests/unit/push/test_kinds.py)
        submitted_by=row.account_id,
        facts=facts_to_proto(facts_from_json(row.facts)),
    )


def notice_to_proto(row: NoticeRow) -> push_pb2.Notice:
    return message_from(push_pb2.Notice, row, kind=KIND_PROTOS[PushKind(row.kind)])


def grant_to_proto(row: GrantRow) -> push_pb2.Grant:
    return message_from(push_pb2.Grant, row)


def parse_cursor(f: Fields, cursor: str) -> tuple[int, str]:
    """``<ledger seq>/<last recipient read>``; empty for the beginning of the ledger."""
    if not cursor:
        return 0, ""
    text, _, recipient = cursor.partition("/")
    seq = int64_digits(text)
    if seq is None or (recipient and not ID_PATTERN.match(recipient)):
        f.fail("cursor", "not a cursor this service issued")
        return 0, ""
    return seq, recipient
