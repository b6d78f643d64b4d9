"""The gateway's one way to call backends, and the push flow's gateway logic, against fake backends.

No processes: each servicer is built over ``tests.unit.gateway.fakes`` and
called as the gRPC server would call it.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from gateway.auth import Principal, Role
from gateway.backends import Retry
from gateway.downstream import MIN_DEADLINE_SECONDS, Relayed
from gateway.push import PushService
from qun.eligibility.v1 import eligibility_pb2
from qun.gateway.v1 import push_pb2 as public
from qun.push.v1 import push_pb2 as internal
from services.common.errors import PermissionDenied
from tests.unit.gateway.fakes import Context, Scripted, Streaming, Stub, acting_as, backends, rpc_error

UNAVAILABLE = rpc_error(grpc.StatusCode.UNAVAILABLE)


@pytest.mark.parametrize(("retry", "calls", "answered"), [(Retry.SAFE, 2, True), (Retry.NEVER, 1, False)])
async def test_only_a_safe_call_is_repeated_when_its_backend_is_unavailable(
    retry: Retry, calls: int, answered: bool
) -> None:
    method = Scripted(UNAVAILABLE, "ok")
    try:
        assert await backends().call(method, None, Context(), retry=retry) == "ok"
    except Relayed as relayed:
        assert relayed.code is grpc.StatusCode.UNAVAILABLE and not answered
    assert len(method.requests) == calls


def test_a_mutation_is_safe_to_repeat_only_with_a_request_id() -> None:
    assert Retry.with_request_id("r1") is Retry.SAFE
    assert Retry.with_request_id("") is Retry.NEVER


@pytest.mark.parametrize(("remaining", "deadline"), [(None, 1.0), (0.3, 0.3), (9.0, 1.0), (0.0, MIN_DEADLINE_SECONDS)])
async def test_a_call_gets_the_budget_or_what_is_left_of_the_callers_deadline(
    remaining: float | None, deadline: float
) -> None:
    method = Scripted("ok")
    await backends(timeout=1.0).call(method, None, Context(remaining), retry=Retry.SAFE)
    assert method.timeouts == [pytest.approx(deadline)]


async def test_a_refusal_reaches_the_caller_as_the_backend_gave_it_and_is_not_repeated() -> None:
    method = Scripted(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "C1 not verified"), "ok")
    with pytest.raises(Relayed) as relayed:
        await backends().call(method, None, Context(), retry=Retry.SAFE)
    assert (relayed.value.code, str(relayed.value)) == (grpc.StatusCode.FAILED_PRECONDITION, "C1 not verified")
    assert len(method.requests) == 1


@pytest.mark.parametrize(
    ("remaining", "budget", "deadline"), [(None, None, None), (None, 300.0, 300.0), (5.0, 300.0, 5.0)]
)
async def test_a_stream_runs_within_the_callers_deadline_and_its_budget(
    remaining: float | None, budget: float | None, deadline: float | None
) -> None:
    method = Streaming(["a", "b"])
    got = [m async for m in backends().stream(method, None, Context(remaining), budget=budget)]
    assert got == ["a", "b"] and method.timeouts == [deadline]


async def test_a_streams_refusal_is_relayed_and_a_stream_left_early_is_cancelled() -> None:
    failing = Streaming(["a"], error=rpc_error(grpc.StatusCode.NOT_FOUND))
    with pytest.raises(Relayed) as relayed:
        [m async for m in backends().stream(failing, None, Context())]
    assert relayed.value.code is grpc.StatusCode.NOT_FOUND
    endless = Streaming(["a", "b", "c"])
    messages = backends().stream(endless, None, Context())
    assert await anext(messages) == "a"
    await messages.aclose()
    assert endless.calls[0].cancelled


async def test_best_effort_work_gets_the_budget_and_no_second_try() -> None:
    method = Scripted(UNAVAILABLE)
    with pytest.raises(Relayed):
        await backends(timeout=2.0).best_effort(method, None)
    assert method.timeouts == [2.0]


# -- the push submission's gateway logic ---------------------------------------------------------

MAIN = Principal("m1", Role.STORE_MAIN, "s1")
FACTS = eligibility_pb2.GetPushFactsResponse(store_id="s1", main_account_id="m1", subscribers=40)
DRAFT = internal.CreateDraftResponse(push=internal.Push(push_id="p1", store_id="s1"), audience_limit=0)
SEALED = internal.SubmitDraftResponse(push=internal.Push(push_id="p1", store_id="s1"))


def push_service(**methods: Any) -> tuple[PushService, dict[str, Any]]:
    eligibility = {k: v for k, v in methods.items() if k in ("GetPushFacts", "StreamPushAudience")}
    push = {k: v for k, v in methods.items() if k not in eligibility}
    return PushService(backends(eligibility=Stub(**eligibility), push=Stub(**push))), methods


def submission(request_id: str = "") -> public.SubmitPushRequest:
    return public.SubmitPushRequest(kind=public.PUSH_KIND_SUBSCRIPTION, title="t", body="b", request_id=request_id)


async def test_a_draft_whose_audience_fails_midway_is_discarded_and_the_failure_relayed() -> None:
    service, calls = push_service(
        GetPushFacts=Scripted(FACTS),
        CreateDraft=Scripted(DRAFT),
        StreamPushAudience=Streaming([eligibility_pb2.StreamPushAudienceResponse(consumer_ids=["c1"])], UNAVAILABLE),
        AppendAudience=Scripted(internal.AppendAudienceResponse()),
        DiscardDraft=Scripted(internal.DiscardDraftResponse()),
    )
    with acting_as(MAIN):
        with pytest.raises(Relayed):
            await service.SubmitPush(submission(), Context())
    assert [r.push_id for r in calls["DiscardDraft"].requests] == ["p1"]


async def test_a_submission_named_by_a_request_id_is_retried_and_a_replay_answers_the_first_push() -> None:
    replayed = internal.CreateDraftResponse(push=internal.Push(push_id="p0", store_id="s1"), replayed=True)
    service, calls = push_service(GetPushFacts=Scripted(FACTS), CreateDraft=Scripted(UNAVAILABLE, replayed))
    with acting_as(MAIN):
        answer = await service.SubmitPush(submission("r1"), Context())
    assert answer.push.push_id == "p0" and len(calls["CreateDraft"].requests) == 2


async def test_a_submission_without_a_request_id_is_never_repeated() -> None:
    service, calls = push_service(GetPushFacts=Scripted(FACTS), CreateDraft=Scripted(UNAVAILABLE, DRAFT))
    with acting_as(MAIN):
        with pytest.raises(Relayed):
            await service.SubmitPush(submission(), Context())
    assert len(calls["CreateDraft"].requests) == 1


@pytest.mark.parametrize(
    ("method", "request_", "principal", "rule"),
    [
        ("SubmitPush", submission(), Principal("a1", Role.STORE_SUB, "s1"), "P1"),
        ("CancelPush", public.CancelPushRequest(push_id="p1"), Principal("a1", Role.STORE_SUB, "s1"), "P6"),
        ("ReviewPush", public.ReviewPushRequest(push_id="p1", decision=1), MAIN, "P6"),
        ("ListPendingReviews", public.ListPendingReviewsRequest(), MAIN, "P8"),
        ("GrantMassSend", public.GrantMassSendRequest(store_id="s1"), MAIN, "P5"),
    ],
)
async def test_push_calls_refuse_the_wrong_role_before_any_backend_is_called(
    method: str, request_: Any, principal: Principal, rule: str
) -> None:
    service, _ = push_service()  # any backend call fails the test
    with acting_as(principal):
        with pytest.raises(PermissionDenied) as refused:
            await getattr(service, method)(request_, Context())
    assert refused.value.metadata["rules"] == rule
