"""One trace per request (OpenTelemetry), every process real, exporting to a test collector over OTLP.

A join through the gateway is one trace: the gateway's server span, its client spans to eligibility and
groups, their server spans, and the SQL under them. A refusal's span carries the rule ids. The caller
gets the request id and trace id in the answer's metadata, and the log lines name the same trace.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from qun.gateway.v1 import gateway_pb2
from tests.flows.test_create_and_join import new_group, new_store
from tests.support import facts
from tests.support.otlp import Collector, ReceivedSpan
from tests.support.stack import GatewayClient, RunningStack, running_stack, unique

SERVER, CLIENT = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, collector: Collector
) -> Iterator[RunningStack]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with running_stack(tmp_path_factory.mktemp(f"traced-{request.param}"), request.param, extra_env=env) as running:
        yield running


def by_service(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    found: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        found.setdefault(span.service, []).append(span)
    return found


async def group_and_consumer(
    gw: GatewayClient, platform: RunningStack, *, follows: bool, score: int = 600
) -> tuple[str, str]:
    """A new store's group-set (follow threshold) and a new consumer, who follows the store or not."""
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    consumer = unique("c")
    await gw.report(facts.consumer(consumer, score=score, follows=(store_id,) if follows else ()))
    return group.group_set_id, consumer


async def test_a_join_is_one_trace_across_the_gateway_eligibility_groups_and_their_sql(
    gw: GatewayClient, platform: RunningStack, collector: Collector
) -> None:
    group_set_id, consumer = await group_and_consumer(gw, platform, follows=True)
    trace = uuid.uuid4().hex
    parent = f"00-{trace}-b7ad6b7169203331-01"  # the caller's own trace, continued
    call = gw.groups.JoinGroupSet(
        gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id),
        metadata=(*gw.auth(gw.consumer(consumer)), ("traceparent", parent)),
    )
    await call
    answered = dict(await call.initial_metadata())
    assert answered["x-trace-id"] == trace and answered["x-request-id"]

    def complete(spans: list[ReceivedSpan]) -> bool:
        services = by_service(spans)
        ids = {span.span_id for span in spans}
        # Each process exports in its own batches: wait for the gateway's server span too, not only some span.
        return (
            all(name in services for name in ("qun-gateway", "qun-eligibility", "qun-groups"))
            and any(s.kind == SERVER for s in services["qun-gateway"])
            and sum(s.kind == SERVER for name in ("qun-eligibility", "qun-groups") for s in services[name]) >= 2
            and any("db.statement" in span.attributes and span.service == "qun-groups" for span in spans)
            and all(span.parent_id in ids or span.kind == SERVER and span.service == "qun-gateway" for span in spans)
        )

    spans = collector.trace(trace, until=complete)
    assert complete(spans), [(s.service, s.name) for s in spans]
    ids = {span.span_id for span in spans}
    services = by_service(spans)
    [root] = [s for s in services["qun-gateway"] if s.kind == SERVER]
    assert root.name == "/qun.gateway.v1.GroupService/JoinGroupSet" and root.parent_id == "b7ad6b7169203331"
    # Each backend's server span is the child of one of the gateway's client spans; every span is in the tree.
    clients = {s.span_id: s for s in services["qun-gateway"] if s.kind == CLIENT}
    for backend in ("qun-eligibility", "qun-groups"):
        served = [s for s in services[backend] if s.kind == SERVER]
        assert served and all(s.parent_id in clients for s in served), backend
    assert all(span.parent_id in ids for span in spans if span is not root)
    sql = [s for s in spans if s.attributes.get("db.statement")]
    assert {s.service for s in sql} >= {"qun-groups", "qun-eligibility"}


async def test_a_refusals_span_carries_its_rule_ids(
    gw: GatewayClient, platform: RunningStack, collector: Collector
) -> None:
    group_set_id, stranger = await group_and_consumer(gw, platform, follows=False, score=100)
    call = gw.groups.JoinGroupSet(
        gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id), metadata=gw.auth(gw.consumer(stranger))
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    # No traceparent sent: the gateway began the trace, and still tells the caller its id to quote.
    trace_id = dict(refused.value.initial_metadata())["x-trace-id"]

    def refused_span(spans: list[ReceivedSpan]) -> bool:
        return any(
            s.service == "qun-gateway" and s.kind == SERVER and "qun.refusal.rules" in s.attributes for s in spans
        )

    spans = collector.trace(trace_id, until=refused_span)
    [root] = [s for s in spans if s.service == "qun-gateway" and s.kind == SERVER]
    assert set(root.attributes["qun.refusal.rules"].split(",")) >= {"C2", "C9"}
    assert root.attributes["rpc.grpc.status_code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    # The gateway's log line for the refusal names the trace and the request id the caller was given.
    request_id = dict(refused.value.initial_metadata())["x-request-id"]
    log = (platform.stack.data_dir / "logs" / "gateway.log").read_text()
    [line] = [json.loads(line) for line in log.splitlines() if request_id in line]
    assert (line["trace_id"], line["code"]) == (trace_id, "FAILED_PRECONDITION")
