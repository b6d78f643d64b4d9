"""The deployment's HTTP port (Connect JSON): the same answers as its gRPC port, from outside."""

from __future__ import annotations

import httpx
import pytest

from qun.gateway.v1 import gateway_pb2
from tests.e2e.scenarios import Gateway, consumer_facts, create_store_group, new_store, unique

GROUPS = "/qun.gateway.v1.GroupService"


def bearer(gw: Gateway, consumer: str) -> dict[str, str]:
    return {"authorization": f"Bearer {gw.deployment.token(consumer, 'consumer')}"}


def test_the_http_port_answers_a_join_and_its_refusal_as_the_grpc_port_does(gw: Gateway) -> None:
    base = gw.deployment.http_url
    if not base:
        pytest.skip("the deployment names no HTTP port (QUN_E2E_HTTP)")
    store = new_store(gw)
    group = create_store_group(gw, store)
    stranger, member = unique("c"), unique("c")
    gw.report(consumer_facts(stranger, score=350, real_name=False) + consumer_facts(member, follows=(store.store_id,)))
    as_stranger = gw.as_(stranger, "consumer")
    over_grpc = gw.groups.ExplainJoin(gateway_pb2.ExplainJoinRequest(group_set_id=group.group_set_id), **as_stranger)
    expected = sorted(f.rule_id for f in over_grpc.verdict.failures)

    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "SERVING"}
        stranger_headers = bearer(gw, stranger)
        explained = http.post(
            f"{GROUPS}/ExplainJoin", json={"groupSetId": group.group_set_id}, headers=stranger_headers
        )
        assert sorted(f["ruleId"] for f in explained.json()["verdict"]["failures"]) == expected
        refused = http.post(f"{GROUPS}/JoinGroupSet", json={"groupSetId": group.group_set_id}, headers=stranger_headers)
        assert (refused.status_code, refused.json()["code"]) == (400, "failed_precondition")
        [verdict] = [d["debug"] for d in refused.json()["details"] if d["type"] == "qun.common.v1.Verdict"]
        assert sorted(f["ruleId"] for f in verdict["failures"]) == expected
        assert refused.headers["x-request-id"]
        joined = http.post(
            f"{GROUPS}/JoinGroupSet", json={"groupSetId": group.group_set_id}, headers=bearer(gw, member)
        )
    assert joined.status_code == 200, joined.text
    assert joined.json()["membership"]["subGroupName"] == "粉丝群1"
