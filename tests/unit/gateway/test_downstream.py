"""Downstream calls: UNAVAILABLE retried only when safe; refusals relayed with their details."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from gateway.downstream import Downstream, Relayed
from services.common.errors import Failure, RuleRefusal, failures_from_status


def rpc_error(code: grpc.StatusCode, trailing: Metadata | None = None, details: str = "") -> AioRpcError:
    return AioRpcError(code, Metadata(), trailing or Metadata(), details=details or code.name.lower())


class Flaky:
    """Fails with ``code`` for the first ``failures`` calls, then answers."""

    def __init__(self, code: grpc.StatusCode, failures: int) -> None:
        self.code = code
        self.failures = failures
        self.calls = 0
        self.timeouts: list[float] = []

    async def __call__(self, request: object, timeout: float) -> str:
        self.calls += 1
        self.timeouts.append(timeout)
        if self.calls <= self.failures:
            raise rpc_error(self.code)
        return "ok"


async def test_safe_calls_are_retried_on_unavailable() -> None:
    method = Flaky(grpc.StatusCode.UNAVAILABLE, failures=2)
    assert await Downstream(timeout=1.0, attempts=3).call(method, None, safe=True) == "ok"
    assert method.calls == 3


async def test_unsafe_calls_are_not_retried() -> None:
    method = Flaky(grpc.StatusCode.UNAVAILABLE, failures=1)
    with pytest.raises(Relayed) as relayed:
        await Downstream(timeout=1.0, attempts=3).call(method, None, safe=False)
    assert relayed.value.code is grpc.StatusCode.UNAVAILABLE and method.calls == 1


async def test_other_codes_are_never_retried() -> None:
    method = Flaky(grpc.StatusCode.FAILED_PRECONDITION, failures=1)
    with pytest.raises(Relayed):
        await Downstream(timeout=1.0, attempts=3).call(method, None, safe=True)
    assert method.calls == 1


async def test_deadline_is_the_budget_or_what_the_caller_has_left() -> None:
    method = Flaky(grpc.StatusCode.OK, failures=0)
    downstream = Downstream(timeout=2.0, attempts=1)
    await downstream.call(method, None, safe=True)
    await downstream.call(method, None, safe=True, caller_remaining=0.5)
    assert method.timeouts == [2.0, 0.5]


async def test_a_refusal_keeps_its_rich_details() -> None:
    status = RuleRefusal([Failure("C2", "TAOQI_SCORE_TOO_LOW", "淘气值 350 < 401", {"taoqi_score": "350"})]).to_status()
    trailing = Metadata(("grpc-status-details-bin", status.SerializeToString()))

    async def refuse(request: object, timeout: float) -> str:
        raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION, trailing, status.message)

    with pytest.raises(Relayed) as relayed:
        await Downstream(timeout=1.0, attempts=1).call(refuse, None, safe=True)
    assert relayed.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert [f.rule_id for f in failures_from_status(relayed.value.to_status())] == ["C2"]
