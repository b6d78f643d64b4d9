"""The public API as a web client sees it: JSON over HTTP in the Connect protocol, every service a real process.

A real HTTP client (httpx) against the running stack's HTTP port: a create and a join, a refusal with its
rules and figures, a server stream, a bad token and a bad body, HTTP/2 without TLS, health, metrics, and
the request id a caller can quote. Each answer is compared with what the gRPC port says for the same call.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import struct
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest

from gateway.auth import Principal, Role
from qun.gateway.v1 import campaigns_pb2 as pb
from qun.gateway.v1 import gateway_pb2
from services.common.server import MAX_MESSAGE_BYTES
from tests.flows.test_campaigns import OPS, Shop, at, shop  # noqa: F401 - shop is the fixture used below
from tests.flows.test_create_and_join import join, new_group, new_store
from tests.support import facts
from tests.support.stack import GatewayClient, RunningStack, unique

GROUPS = "/qun.gateway.v1.GroupService"
CAMPAIGNS = "/qun.gateway.v1.CampaignService"
END_STREAM = 0x02


def bearer(gw: GatewayClient, principal: Principal) -> dict[str, str]:
    return dict(gw.auth(principal))


@pytest.fixture
async def http(platform: RunningStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.stack.gateway.http_url, timeout=10) as client:
        yield client


async def test_create_and_join_in_json_then_read_it_back_over_grpc(
    http: httpx.AsyncClient, gw: GatewayClient, platform: RunningStack
) -> None:
    store_id, main_id = await new_store(gw, platform)
    consumer = unique("c")
    await gw.report(facts.consumer(consumer, follows=(store_id,)))
    created = await http.post(
        f"{GROUPS}/CreateGroupSet",
        json={"kind": "GROUP_KIND_STORE", "name": "粉丝群", "threshold": {"follow": {}}},
        headers=bearer(gw, gw.main_account(main_id, store_id)),
    )
    assert created.status_code == 200, created.text
    assert created.headers["content-type"].startswith("application/json")
    group = created.json()["groupSet"]
    # Zero and false fields are there: a client reads 0 members, not a missing key.
    assert (group["name"], group["memberCount"], group["isPublic"]) == ("粉丝群", 0, False)
    assert group["subGroups"][0]["name"] == "粉丝群1"

    joined = await http.post(
        f"{GROUPS}/JoinGroupSet", json={"groupSetId": group["groupSetId"]}, headers=bearer(gw, gw.consumer(consumer))
    )
    assert joined.status_code == 200, joined.text
    membership = joined.json()["membership"]
    assert (membership["groupSetId"], membership["subGroupId"]) == (
        group["groupSetId"],
        group["subGroups"][0]["subGroupId"],
    )
    again = await join(gw, consumer, group["groupSetId"])  # the gRPC port sees the same membership
    assert again.membership.sub_group_id == membership["subGroupId"]


async def test_a_refused_join_names_every_failed_rule_as_the_grpc_port_does(
    http: httpx.AsyncClient, gw: GatewayClient, platform: RunningStack
) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    stranger = unique("c")
    await gw.report(facts.consumer(stranger, score=100))  # follows nobody, too low a score
    with pytest.raises(grpc.aio.AioRpcError) as over_grpc:
        await join(gw, stranger, group.group_set_id)

    refused = await http.post(
        f"{GROUPS}/JoinGroupSet", json={"groupSetId": group.group_set_id}, headers=bearer(gw, gw.consumer(stranger))
    )
    assert refused.status_code == 400
    error = refused.json()
    assert error["code"] == over_grpc.value.code().name.lower() == "failed_precondition"
    assert error["message"] == over_grpc.value.details()
    verdicts = [d["debug"] for d in error["details"] if d["type"] == "qun.common.v1.Verdict"]
    assert verdicts, error
    failed = {f["ruleId"]: f for f in verdicts[0]["failures"]}
    assert {"C2", "C9"} <= set(failed)
    assert failed["C2"]["figures"]["taoqi_score"] == "100"
    assert refused.headers["x-request-id"]


async def test_a_bad_token_and_a_token_of_the_wrong_role(
    http: httpx.AsyncClient, gw: GatewayClient, platform: RunningStack
) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    body = {"groupSetId": group.group_set_id}
    forged = await http.post(f"{GROUPS}/JoinGroupSet", json=body, headers={"authorization": "Bearer not-a-token"})
    assert (forged.status_code, forged.json()["code"]) == (401, "unauthenticated")
    missing = await http.post(f"{GROUPS}/JoinGroupSet", json=body)
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthenticated")
    merchant = await http.post(
        f"{GROUPS}/JoinGroupSet", json=body, headers=bearer(gw, gw.main_account(main_id, store_id))
    )
    assert (merchant.status_code, merchant.json()["code"]) == (403, "permission_denied")


async def test_a_bad_body_is_invalid_argument_and_a_value_past_its_bound_names_the_field(
    http: httpx.AsyncClient, gw: GatewayClient, platform: RunningStack
) -> None:
    store_id, main_id = await new_store(gw, platform)
    owner = bearer(gw, gw.main_account(main_id, store_id))
    broken = await http.post(
        f"{GROUPS}/CreateGroupSet", content=b'{"kind": ', headers={**owner, "content-type": "application/json"}
    )
    assert (broken.status_code, broken.json()["code"]) == (400, "invalid_argument")
    wrong_field = await http.post(f"{GROUPS}/CreateGroupSet", json={"kindd": 1}, headers=owner)
    assert (wrong_field.status_code, wrong_field.json()["code"]) == (400, "invalid_argument")
    too_long = await http.post(
        f"{GROUPS}/CreateGroupSet",
        json={"kind": "GROUP_KIND_STORE", "name": "群" * 200, "threshold": {"follow": {}}},
        headers=owner,
    )
    assert (too_long.status_code, too_long.json()["code"]) == (400, "invalid_argument")
    [bad_request] = [d["debug"] for d in too_long.json()["details"] if d["type"] == "google.rpc.BadRequest"]
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["name"]
    listed = await gw.groups.ListGroupSets(
        gateway_pb2.ListGroupSetsRequest(store_id=store_id),
        metadata=gw.auth(gw.main_account(main_id, store_id)),
    )
    assert list(listed.group_sets) == []  # nothing was created by any of them


async def test_bodies_and_headers_no_client_should_send_are_the_callers_errors_and_cost_no_memory(
    http: httpx.AsyncClient, gw: GatewayClient, platform: RunningStack
) -> None:
    """gzip as Connect allows it; a body that is not gzip, ends early, or expands past the largest message
    (a 50 MB bomb in 50 KB), a body past that size, and a timeout that is not digits: 4xx, never 500."""
    store_id, main_id = await new_store(gw, platform)
    json_body = {**bearer(gw, gw.main_account(main_id, store_id)), "content-type": "application/json"}
    gzipped = {**json_body, "content-encoding": "gzip"}
    listing = json.dumps({"storeId": store_id}).encode()
    path = f"{GROUPS}/ListGroupSets"

    async def answer(body: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
        got = await http.post(path, content=body, headers=headers)
        reply = got.json()
        return got.status_code, reply.get("code", "ok"), reply.get("message", "")

    assert (await answer(gzip.compress(listing), gzipped))[:2] == (200, "ok")
    assert (await answer(listing, {**json_body, "connect-timeout-ms": "5000"}))[:2] == (200, "ok")
    bomb = gzip.compress(b'{"storeId": "' + b"a" * 50_000_000 + b'"}')
    assert len(bomb) < 100_000
    cases = [
        (listing, gzipped, 400, "invalid_argument", "the body is not gzip"),
        (gzip.compress(listing)[:-6], gzipped, 400, "invalid_argument", "ends before its stream does"),
        (bomb, gzipped, 429, "resource_exhausted", f"larger than {MAX_MESSAGE_BYTES} bytes"),
        (b'{"storeId": "' + b"a" * (MAX_MESSAGE_BYTES + 10) + b'"}', json_body, 429, "resource_exhausted", "larger"),
    ]
    for timeout in ("-5", "+500", "1_000", "5e3"):
        cases.append((listing, {**json_body, "connect-timeout-ms": timeout}, 400, "invalid_argument", "timeout"))
    for body, headers, status, code, says in cases:
        got = await answer(body, headers)
        assert got[:2] == (status, code) and says in got[2], (headers, got)
    for grpc_type in (
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-web",
        "application/grpc-web+json",
    ):
        other = await http.post(path, content=b"\x00\x00\x00\x00\x00", headers={**json_body, "content-type": grpc_type})
        assert other.status_code == 415  # gRPC is the other port's; here it was a 500

    # A stream's message flagged compressed where no compression is named: the library said INTERNAL.
    flagged = b"\x01" + struct.pack(">I", 2) + b"{}"
    streamed = await http.post(
        f"{CAMPAIGNS}/WatchEndCards",
        content=flagged,
        headers={**json_body, "content-type": "application/connect+json"},
    )
    [(flags, last)] = [message async for message in envelopes(streamed)]
    assert flags == END_STREAM and last["error"]["code"] == "invalid_argument"


def envelope(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(payload)) + payload


async def envelopes(answer: httpx.Response) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """The Connect stream's messages as (flags, JSON), the last one flagged end-of-stream."""
    buffered = b""
    async for chunk in answer.aiter_bytes():
        buffered += chunk
        while len(buffered) >= 5:
            flags, size = struct.unpack(">BI", buffered[:5])
            if len(buffered) < 5 + size:
                break
            yield flags, json.loads(buffered[5 : 5 + size] or b"{}")
            buffered = buffered[5 + size :]


async def test_a_server_stream_over_http_and_its_refusal(shop: Shop, platform: RunningStack) -> None:  # noqa: F811
    start = platform.now
    item_id = await shop.item(stock=10)
    sale = await shop.flash_sale(item_id, minutes=30)
    member, outsider = await shop.member(), await shop.outsider()
    await shop.buy(member, item_id, 3, sale.activity_id)
    try:
        await at(platform, start + timedelta(minutes=31))
        await shop.api.RunExpiry(pb.RunExpiryRequest(), metadata=shop.gw.auth(OPS))
    finally:
        await at(platform, start)
    request = envelope({"storeId": shop.store_id, "groupSetId": shop.group.group_set_id})
    streaming = {"content-type": "application/connect+json", "connect-timeout-ms": "5000"}
    async with httpx.AsyncClient(base_url=platform.stack.gateway.http_url, timeout=10) as client:
        async with client.stream(
            "POST", f"{CAMPAIGNS}/WatchEndCards", content=request, headers={**streaming, **dict(shop.consumer(member))}
        ) as watched:
            assert watched.status_code == 200
            async for flags, message in envelopes(watched):
                assert flags == 0, message
                card = message["endCard"]
                assert (card["activityId"], card["unitsSold"]) == (sale.activity_id, "3")
                break

        async with client.stream(
            "POST",
            f"{CAMPAIGNS}/WatchEndCards",
            content=request,
            headers={**streaming, **dict(shop.consumer(outsider))},
        ) as refused:
            frames = [frame async for frame in envelopes(refused)]
    assert [flags for flags, _ in frames] == [END_STREAM]
    assert frames[0][1]["error"]["code"] == "permission_denied"


async def test_http2_without_tls_health_metrics_and_the_request_id(
    http: httpx.AsyncClient, gw: GatewayClient, platform: RunningStack
) -> None:
    health = await http.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "SERVING"})
    upstream = bearer(gw, Principal("upstream-http", Role.UPSTREAM))
    async with httpx.AsyncClient(base_url=platform.stack.gateway.http_url, http1=False, http2=True) as h2:
        answer = await h2.post(
            "/qun.gateway.v1.FactService/ReportFacts",
            json={"facts": [{"taoqiScore": {"consumerId": unique("c"), "score": 500}}]},
            headers={
                **upstream,
                "x-request-id": "quote-me-1",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            },
        )
    assert answer.http_version == "HTTP/2"
    assert answer.status_code == 200, answer.text
    # Both ids to quote; the caller's trace continues through the gateway even with tracing off here.
    assert answer.headers["x-request-id"] == "quote-me-1"
    assert answer.headers["x-trace-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    await asyncio.sleep(0)
    with urllib.request.urlopen(platform.stack.gateway.metrics_url, timeout=5) as page:
        text = page.read().decode()
    assert 'qun_http_requests_total{procedure="/qun.gateway.v1.FactService/ReportFacts",status="200"}' in text
    # The same call was a gRPC call of the gateway too: one implementation, counted once more there.
    assert 'grpc_method="ReportFacts"' in text
