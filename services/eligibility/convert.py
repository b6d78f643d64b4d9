"""Between the wire and the domain: proto facts, queries and thresholds to plain values, and back.

Every request is validated whole before it touches the database, so a
caller gets one INVALID_ARGUMENT naming every bad field
(``facts[3].paid_order.amount_fen``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from qun.common.v1 import facts_pb2, groups_pb2
from qun.eligibility.v1 import eligibility_pb2
from services.common.messages import message_from
from services.common.rules import BoundsRules
from services.common.validation import Fields
from services.eligibility import rules as domain_rules
from services.eligibility.domain import (
    Account,
    Blacklisting,
    Broadcast,
    ContentLevel,
    CrowdMembership,
    CrowdThreshold,
    Fact,
    FanLevel,
    FanLevelFact,
    FanLevelThreshold,
    Follow,
    FollowThreshold,
    GroupKind,
    Invitation,
    JoinQuery,
    PaidOrder,
    PasswordThreshold,
    Platform,
    PushAudience,
    PushFacts,
    PushSubscription,
    RealName,
    RevisitRate,
    Role,
    Scope,
    SpendThreshold,
    Store,
    TaoqiScore,
    Threshold,
)

MAX_FUTURE = timedelta(days=1)  # upstream clocks may run ahead, not by days
MAX_PASSWORD_CHARS = 128
MAX_DIGEST_CHARS = 256
MAX_RATE_BP = 10_000  # a rate is at most 100%
AUDIENCES: dict[int, PushAudience] = {
    eligibility_pb2.PUSH_AUDIENCE_SUBSCRIBERS: PushAudience.SUBSCRIBERS,
    eligibility_pb2.PUSH_AUDIENCE_RECALL: PushAudience.RECALL,
    eligibility_pb2.PUSH_AUDIENCE_FANS: PushAudience.FANS,
}

ROLES: dict[int, Role] = {
    facts_pb2.ACCOUNT_ROLE_STORE_MAIN: Role.STORE_MAIN,
    facts_pb2.ACCOUNT_ROLE_STORE_SUB: Role.STORE_SUB,
    facts_pb2.ACCOUNT_ROLE_STREAMER: Role.STREAMER,
    facts_pb2.ACCOUNT_ROLE_CONSUMER: Role.CONSUMER,
}
ROLE_PROTOS = {role: facts_pb2.AccountRole.ValueType(value) for value, role in ROLES.items()}
PLATFORMS: dict[int, Platform] = {facts_pb2.PLATFORM_TAOBAO: Platform.TAOBAO, facts_pb2.PLATFORM_TMALL: Platform.TMALL}
PLATFORM_PROTOS = {platform: number for number, platform in PLATFORMS.items()}
SCOPES: dict[int, Scope] = {
    facts_pb2.BLACKLIST_SCOPE_PLATFORM: Scope.PLATFORM,
    facts_pb2.BLACKLIST_SCOPE_MERCHANT: Scope.MERCHANT,
}
KINDS: dict[int, GroupKind] = {groups_pb2.GROUP_KIND_STORE: GroupKind.STORE, groups_pb2.GROUP_KIND_LIVE: GroupKind.LIVE}
FAN_LEVELS: dict[int, FanLevel] = {
    groups_pb2.FAN_LEVEL_NONE: FanLevel.NONE,
    groups_pb2.FAN_LEVEL_IRON: FanLevel.IRON,
    groups_pb2.FAN_LEVEL_DIAMOND: FanLevel.DIAMOND,
    groups_pb2.FAN_LEVEL_BELOVED: FanLevel.BELOVED,
}
THRESHOLD_LEVELS = (groups_pb2.FAN_LEVEL_IRON, groups_pb2.FAN_LEVEL_DIAMOND, groups_pb2.FAN_LEVEL_BELOVED)
STORE_ROLES = (Role.STORE_MAIN, Role.STORE_SUB)


def parse_facts(messages: Sequence[facts_pb2.Fact], now: datetime, bounds: BoundsRules) -> list[Fact]:
    """Every fact of the batch, or one INVALID_ARGUMENT naming every bad field."""
    fields = Fields()
    if not messages:
        fields.fail("facts", "at least one fact is required")
    elif len(messages) > bounds.facts_per_batch:
        fields.fail("facts", f"at most {bounds.facts_per_batch} facts per batch, got {len(messages)}")
    fields.done()
    parsed = [_fact(fields, f"facts[{i}]", message, now, bounds) for i, message in enumerate(messages)]
    fields.done()
    return [fact for fact in parsed if fact is not None]


def _fact(fields: Fields, path: str, message: facts_pb2.Fact, now: datetime, bounds: BoundsRules) -> Fact | None:
    which = message.WhichOneof("fact")
    if which is None:
        fields.fail(path, "one fact kind must be set")
        return None
    at = f"{path}.{which}"
    if which == "account":
        return _account(fields, at, message.account)
    if which == "store":
        s = message.store
        fields.enum(f"{at}.platform", s.platform, facts_pb2.Platform)
        return Store(
            fields.identifier(f"{at}.store_id", s.store_id),
            PLATFORMS.get(s.platform, Platform.TAOBAO),
            fields.identifier(f"{at}.main_account_id", s.main_account_id),
            s.operating_normally,
        )
    if which == "paid_order":
        o = message.paid_order
        return PaidOrder(
            fields.identifier(f"{at}.order_id", o.order_id),
            fields.identifier(f"{at}.store_id", o.store_id),
            fields.identifier(f"{at}.consumer_id", o.consumer_id),
            fields.positive(f"{at}.amount_fen", o.amount_fen, high=bounds.money_fen),
            _instant(fields, f"{at}.paid_at", o.paid_at, o.HasField("paid_at"), now),
        )
    if which == "content_level":
        c = message.content_level
        return ContentLevel(
            fields.identifier(f"{at}.store_id", c.store_id),
            fields.in_range(f"{at}.level", c.level, 0, bounds.content_level),
            _instant(fields, f"{at}.updated_at", c.updated_at, c.HasField("updated_at"), now),
        )
    if which == "follow":
        f = message.follow
        return Follow(
            fields.identifier(f"{at}.store_id", f.store_id),
            fields.identifier(f"{at}.consumer_id", f.consumer_id),
            f.following,
        )
    if which == "real_name":
        r = message.real_name
        return RealName(fields.identifier(f"{at}.consumer_id", r.consumer_id), r.verified)
    if which == "taoqi_score":
        t = message.taoqi_score
        return TaoqiScore(
            fields.identifier(f"{at}.consumer_id", t.consumer_id),
            fields.in_range(f"{at}.score", t.score, 0, bounds.taoqi_score),
        )
    if which == "blacklist":
        b = message.blacklist
        fields.enum(f"{at}.scope", b.scope, facts_pb2.BlacklistScope)
        scope = SCOPES.get(b.scope)
        if scope is Scope.MERCHANT:
            fields.identifier(f"{at}.store_id", b.store_id)
        elif scope is Scope.PLATFORM and b.store_id:
            fields.fail(f"{at}.store_id", "must be empty for a platform-scope entry")
        return Blacklisting(
            scope or Scope.PLATFORM, b.store_id, fields.identifier(f"{at}.consumer_id", b.consumer_id), b.listed
        )
    if which == "invitation":
        i = message.invitation
        inviter = fields.identifier(f"{at}.inviter_id", i.inviter_id)
        invitee = fields.identifier(f"{at}.invitee_id", i.invitee_id)
        if inviter and inviter == invitee:
            fields.fail(f"{at}.invitee_id", "an account cannot invite itself")
        return Invitation(inviter, invitee)
    if which == "crowd_membership":
        m = message.crowd_membership
        return CrowdMembership(
            fields.identifier(f"{at}.store_id", m.store_id),
            fields.identifier(f"{at}.crowd_id", m.crowd_id),
            fields.identifier(f"{at}.consumer_id", m.consumer_id),
            m.member,
        )
    if which == "fan_level":
        fl = message.fan_level
        fields.enum(f"{at}.level", fl.level, groups_pb2.FanLevel)
        return FanLevelFact(
            fields.identifier(f"{at}.streamer_id", fl.streamer_id),
            fields.identifier(f"{at}.consumer_id", fl.consumer_id),
            FAN_LEVELS.get(fl.level, FanLevel.NONE),
        )
    if which == "push_subscription":
        ps = message.push_subscription
        return PushSubscription(
            fields.identifier(f"{at}.store_id", ps.store_id),
            fields.identifier(f"{at}.consumer_id", ps.consumer_id),
            ps.subscribed,
        )
    if which == "broadcast":
        bc = message.broadcast
        return Broadcast(
            fields.identifier(f"{at}.store_id", bc.store_id),
            fields.identifier(f"{at}.broadcast_id", bc.broadcast_id),
            _instant(fields, f"{at}.published_at", bc.published_at, bc.HasField("published_at"), now),
        )
    if which == "revisit_rate":
        rr = message.revisit_rate
        return RevisitRate(
            fields.identifier(f"{at}.store_id", rr.store_id),
            fields.in_range(f"{at}.rate_bp", rr.rate_bp, 0, MAX_RATE_BP),
            _instant(fields, f"{at}.computed_at", rr.computed_at, rr.HasField("computed_at"), now),
        )
    fields.fail(path, f"unsupported fact kind {which}")  # pragma: no cover - a new proto field
    return None


def _account(fields: Fields, at: str, a: facts_pb2.AccountFact) -> Account:
    account_id = fields.identifier(f"{at}.account_id", a.account_id)
    fields.enum(f"{at}.role", a.role, facts_pb2.AccountRole)
    role = ROLES.get(a.role)
    if role in STORE_ROLES:
        fields.identifier(f"{at}.store_id", a.store_id)
    elif role is Role.STREAMER:
        fields.identifier(f"{at}.store_id", a.store_id, required=False)
    elif role is Role.CONSUMER and a.store_id:
        fields.fail(f"{at}.store_id", "must be empty for a consumer; a seller account names its store in own_store_id")
    if role is Role.CONSUMER:
        fields.identifier(f"{at}.own_store_id", a.own_store_id, required=False)
    elif a.own_store_id:
        fields.fail(f"{at}.own_store_id", "only consumers carry own_store_id")
    if a.broadcast_permitted and role is not None and role is not Role.STREAMER:
        fields.fail(f"{at}.broadcast_permitted", "only streamers broadcast")
    return Account(account_id, role or Role.CONSUMER, a.store_id, a.broadcast_permitted, a.own_store_id)


# Timestamps after the Unix epoch and within what datetime can hold.


def _instant(fields: Fields, path: str, value: Timestamp, present: bool, now: datetime) -> datetime:
    when = fields.instant(path, value if present else None)
    if when is None:
        return now
    if when > now + MAX_FUTURE:
        fields.fail(path, f"must not be more than {MAX_FUTURE} after now ({now.isoformat()}), got {when.isoformat()}")
    return when


def parse_join(request: eligibility_pb2.CheckJoinRequest) -> JoinQuery:
    fields = Fields()
    consumer_id = fields.identifier("consumer_id", request.consumer_id)
    fields.enum("kind", request.kind, groups_pb2.GroupKind)
    kind = KINDS.get(request.kind)
    store_id = fields.identifier("store_id", request.store_id, required=kind is GroupKind.STORE)
    streamer_id = fields.identifier("streamer_id", request.streamer_id, required=kind is GroupKind.LIVE)
    fields.text("supplied_password", request.supplied_password, max_chars=MAX_PASSWORD_CHARS)
    threshold = _threshold(fields, request)
    if kind is not None and threshold is not None and not domain_rules.threshold_fits(kind, threshold):
        which = request.threshold.WhichOneof("rule")
        fields.fail(
            "threshold",
            f"a {which} threshold does not fit a {kind.value} group "
            "(store groups: follow, spend, password or crowd; live groups: fan_level)",
        )
    fields.done()
    assert kind is not None and threshold is not None  # done() raised otherwise
    return JoinQuery(
        consumer_id=consumer_id,
        kind=kind,
        threshold=threshold,
        store_id=store_id,
        streamer_id=streamer_id,
        supplied_password=request.supplied_password,
        exempt_from_score=request.exempt_from_score,
    )


def _threshold(fields: Fields, request: eligibility_pb2.CheckJoinRequest) -> Threshold | None:
    present = request.HasField("threshold")
    return parse_threshold(fields, "threshold", request.threshold if present else None, request.password_digest)


def parse_threshold(
    fields: Fields, path: str, t: groups_pb2.Threshold | None, password_digest: str = ""
) -> Threshold | None:
    which = t.WhichOneof("rule") if t is not None else None
    if t is None or which is None:
        fields.fail(path, "required: one of follow, spend, password, crowd or fan_level")
        return None
    if which == "follow":
        return FollowThreshold()
    if which == "spend":
        return SpendThreshold(fields.positive(f"{path}.spend.min_spend_fen", t.spend.min_spend_fen))
    if which == "password":
        digest = fields.text("password_digest", password_digest, max_chars=MAX_DIGEST_CHARS, required=True)
        return PasswordThreshold(digest)
    if which == "crowd":
        return CrowdThreshold(fields.identifier(f"{path}.crowd.crowd_id", t.crowd.crowd_id))
    if which == "fan_level":
        level = fields.enum(f"{path}.fan_level.min_level", t.fan_level.min_level, groups_pb2.FanLevel, THRESHOLD_LEVELS)
        return FanLevelThreshold(FAN_LEVELS.get(level, FanLevel.IRON))
    fields.fail(path, f"unsupported threshold {which}")  # pragma: no cover - a new proto field
    return None


# --- domain → proto ---------------------------------------------------------------


def account_to_proto(account: Account) -> facts_pb2.AccountFact:
    return message_from(facts_pb2.AccountFact, account, role=ROLE_PROTOS[account.role])


def push_facts_to_proto(found: PushFacts) -> eligibility_pb2.GetPushFactsResponse:
    return message_from(eligibility_pb2.GetPushFactsResponse, found)
