"""Hostile requests to every public RPC, as every kind of caller; random bytes as bodies.

For each RPC of the gateway's public services (read from the descriptors),
hypothesis generates requests field by field (see ``strategies``) and sends
them as a random principal. No answer may be INTERNAL or UNKNOWN, a refused
call must leave the fixtures as they were, and afterwards every process is
still SERVING with no traceback in its log.
"""

from __future__ import annotations

import os

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from qun.gateway.v1 import campaigns_pb2, operations_pb2
from tests.fuzz import strategies
from tests.security.test_authorisation import ALLOWED
from tests.support.hostile import (
    BROKEN,
    PUBLIC_RPCS,
    Rpc,
    World,
    backend_rpcs,
    internal_metadata,
    log_problems,
)

EXAMPLES = int(os.environ.get("QUN_FUZZ_EXAMPLES", "10"))
# Deterministic in CI; QUN_FUZZ_RANDOM=1 explores new examples on each run.
DERANDOMIZE = os.environ.get("QUN_FUZZ_RANDOM") != "1"
# Bodies that cannot decode: a truncated field, a bad wire type, an over-long varint, a huge length.
GARBAGE = [b"\xff", b"\x0a\xff\xff\xff\xff\xff", b"\x08" + b"\xff" * 11, b"\x0f", bytes(range(256))]


def fuzz_one(world: World, rpc: Rpc, found: list[str], outcomes: dict[str, int]) -> None:
    principals = world.principals()
    state = {"snapshot": world.run(world.snapshot())}
    # Half the examples come from callers the authorisation table allows, so they get past the role check.
    allowed = sorted(ALLOWED.get(rpc.name, principals))
    callers = st.one_of(st.sampled_from(allowed), st.sampled_from(sorted(principals)))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],  # every finding is collected and reported, not shrunk
    )
    @given(request=strategies.message(rpc.request.DESCRIPTOR, world.ids()), who=callers)
    def check(request, who: str) -> None:  # type: ignore[no-untyped-def]
        code = world.run(world.call(rpc, request, principals[who]))
        outcomes[code.name] = outcomes.get(code.name, 0) + 1
        if code in BROKEN or code is grpc.StatusCode.DEADLINE_EXCEEDED:
            found.append(f"{rpc} as {who}: {code.name} for {str(request)[:400]!r}")
            return
        after = world.run(world.snapshot())
        if code is not grpc.StatusCode.OK and after != state["snapshot"]:
            found.append(f"{rpc} as {who}: refused with {code.name} but changed the fixtures; {str(request)[:400]!r}")
        state["snapshot"] = after

    check()


def regressions(world: World) -> list[tuple[str, object, str, grpc.StatusCode]]:
    """Inputs the fuzzer found once, checked first by name: (rpc, request, caller, expected code)."""
    return [
        # A 5000-character period echoed back overflowed the gateway's trailer limit: INTERNAL.
        (
            "RunJob",
            operations_pb2.RunJobRequest(job=operations_pb2.JOB_DAILY_COUNTS, period="x" * 5000),
            "ops",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "RunJob",
            operations_pb2.RunJobRequest(job=operations_pb2.JOB_LEVELS, period="群" * 5000),
            "ops",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        # A timestamp outside 0001..9999 reached the groups service, whose conversion raised: INTERNAL
        # (now refused by Fields.instant there).
        (
            "ReportMemberActivity",
            operations_pb2.ReportMemberActivityRequest(
                group_set_id=world.group_set_id,
                consumer_id=world.member_id,
                active_at=Timestamp(seconds=936534780444939232, nanos=152),
            ),
            "upstream",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        # The same in an activity's window: the gateway's JSON copy into the backend's message raised.
        (
            "CreateActivity",
            campaigns_pb2.CreateActivityRequest(
                group_set_id=world.group_set_id,
                title="投票",
                voting=campaigns_pb2.VotingSpec(options=["甲", "乙"]),
                starts_at=Timestamp(seconds=2**62),
                ends_at=Timestamp(seconds=1, nanos=-5),
            ),
            "store_main",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]


def raw_bodies(world: World, found: list[str]) -> None:
    """Random bytes as request bodies: to the gateway (with a token and without) and to every
    backend (with the internal credential and without). Never INTERNAL; without a credential
    always UNAUTHENTICATED."""
    ops = world.auth(world.principals()["ops"])
    internal = internal_metadata(world.internal_token)
    targets = [("gateway", rpc, ops) for rpc in PUBLIC_RPCS]
    for process, rpcs in backend_rpcs().items():
        targets += [(process, rpc, internal) for rpc in rpcs]

    @settings(
        max_examples=max(EXAMPLES * 8, 40),
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )
    @given(target=st.sampled_from(targets), body=st.one_of(st.binary(max_size=512), st.sampled_from(GARBAGE)))
    def check(target, body: bytes) -> None:  # type: ignore[no-untyped-def]
        process, rpc, credential = target
        code = world.run(world.raw(process, rpc, body, credential))
        if code in BROKEN or code is grpc.StatusCode.DEADLINE_EXCEEDED:
            found.append(f"raw body to {process} {rpc}: {code.name} for {body[:64]!r}")
        bare = world.run(world.raw(process, rpc, body, ()))
        if bare is not grpc.StatusCode.UNAUTHENTICATED:
            found.append(f"raw body to {process} {rpc} without a credential: {bare.name}")

    check()


def test_every_rpc_survives_hostile_requests(world: World) -> None:
    found: list[str] = []
    by_name = {rpc.name: rpc for rpc in PUBLIC_RPCS}
    principals = world.principals()
    for name, request, who, expected in regressions(world):
        code = world.run(world.call(by_name[name], request, principals[who]))
        if code is not expected:
            found.append(f"regression {name} as {who}: {code.name}, expected {expected.name}")
    # The calls that remove fixtures (the owner may dissolve the set) go last.
    last = ("LeaveGroupSet", "RemoveMember", "RemoveAdmin", "DissolveGroupSet")
    for rpc in sorted(PUBLIC_RPCS, key=lambda rpc: rpc.name in last):
        outcomes: dict[str, int] = {}
        fuzz_one(world, rpc, found, outcomes)
        print(f"{rpc}: {outcomes}")  # shown with -s: what the examples reached
    raw_bodies(world, found)
    health = world.run(world.serving())
    assert found == [], "\n".join(found)
    assert set(health.values()) == {"SERVING"}, health
    assert log_problems(world.platform) == []
