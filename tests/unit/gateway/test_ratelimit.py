"""The per-principal token bucket, on a manual clock."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.auth import Principal, Role
from gateway.ratelimit import RateLimited, RateLimiter
from services.common.rules import Rules, RulesError, load_rules


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def limiter(rules: Rules, clock: Clock, **limits: int) -> RateLimiter:
    return RateLimiter(dataclasses.replace(rules.abuse, **limits), now=clock)


def test_burst_then_the_rate_then_recovery(rules: Rules) -> None:
    clock = Clock()
    bucket = limiter(rules, clock, consumer_rate=2, consumer_burst=3)
    alice = Principal("alice", Role.CONSUMER)
    assert [bucket.take(alice) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(alice) == pytest.approx(0.5)  # one token every half second
    clock.t += 0.25
    assert bucket.take(alice) == pytest.approx(0.25)
    clock.t += 0.25
    assert bucket.take(alice) == 0.0
    clock.t += 100  # refills up to the burst, not beyond
    assert [bucket.take(alice) for _ in range(4)][-1] > 0


def test_buckets_are_per_principal_and_role(rules: Rules) -> None:
    clock = Clock()
    bucket = limiter(rules, clock, consumer_rate=1, consumer_burst=1, store_main_rate=1, store_main_burst=1)
    assert bucket.take(Principal("a", Role.CONSUMER)) == 0.0
    assert bucket.take(Principal("a", Role.CONSUMER)) > 0
    assert bucket.take(Principal("b", Role.CONSUMER)) == 0.0
    assert bucket.take(Principal("a", Role.STORE_MAIN, "s1")) == 0.0
    assert bucket.take(Principal("a", Role.STORE_MAIN, "s2")) == 0.0


def test_full_buckets_are_pruned_when_there_are_too_many(rules: Rules, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.ratelimit.MAX_BUCKETS", 10)
    clock = Clock()
    bucket = limiter(rules, clock, consumer_rate=1, consumer_burst=5)
    for i in range(10):
        bucket.take(Principal(f"c{i}", Role.CONSUMER))
    clock.t += 10
    bucket.take(Principal("new", Role.CONSUMER))
    assert list(bucket.buckets) == [("consumer", "new", "")]


def test_refusal_carries_retry_info_and_reason() -> None:
    from google.rpc import error_details_pb2

    status = RateLimited("consumer", 1.25).to_status()
    infos = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    retry = error_details_pb2.RetryInfo()
    infos[0].Unpack(retry)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 250_000_000)
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "RATE_LIMITED" and info.metadata["role"] == "consumer"


def test_defaults_leave_room_for_the_benchmark(rules: Rules) -> None:
    assert rules.abuse.enabled
    assert rules.abuse.upstream_rate >= 10_000 and rules.abuse.ops_rate >= 10_000
    assert min(rules.abuse.limit(role.value)[0] for role in Role) >= 1000


def test_a_zero_rate_stops_the_process(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[abuse]\nconsumer_rate = 0\n")
    with pytest.raises(RulesError, match="abuse.consumer"):
        load_rules(path)
