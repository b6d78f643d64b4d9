"""Two replicas behind one Service name: calls spread over both, and a replica killed mid-run
loses no acknowledged request.

Through the gateway pod only, as a client would: the gateway dials each backend's headless
Service (``dns:///qun-groups-pods:50053``), which resolves to both pods, and balances over
them (round_robin). What each pod served is read from its own ``/metrics``.

1. Spread: reads of a group-set (groups) and of an item (campaigns); each replica of each
   serves 35–65 % of them, and together exactly the calls made.
2. A replica dies: consumers join a group-set while one groups pod is killed (SIGKILL, so
   nothing drains). A join that fails is retried, as a client would (joining is idempotent);
   every join ends acknowledged, and every acknowledged join is a membership afterwards.

Pod addresses are on the run's own network, so it runs inside that namespace, with the run's
podman settings in its environment (for ``podman kill``):

    QUN_E2E_TOKEN_SECRET=… nsenter --net=… python -m tests.containers.replicas \\
        --gateway 10.89.0.9:50051 --metrics groups=10.89.0.5:9453,10.89.0.6:9453 \\
        --metrics campaigns=… --kill qun-groups-pod-1-groups
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from qun.common.v1 import facts_pb2
from qun.gateway.v1 import campaigns_pb2, campaigns_pb2_grpc, gateway_pb2
from tests.e2e.harness import Deployment
from tests.e2e.scenarios import Gateway, consumer_facts, create_store_group, new_store, owner, unique

SPREAD_CALLS = 200
JOINS = 120
KILL_AFTER = 40  # acknowledged joins before the kill
WORKERS = 6
ATTEMPTS = 5
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
SHARE = (0.35, 0.65)


def served(address: str, method: str) -> float:
    """How many calls of ``method`` the process at ``address`` (its /metrics) answered."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{") and f'grpc_method="{method}"' in line
    )


def spread(calls: Callable[[], None], replicas: list[str], method: str) -> list[str]:
    """Problems with how ``SPREAD_CALLS`` calls of ``method`` fell on ``replicas``."""
    before = {address: served(address, method) for address in replicas}
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda _: calls(), range(SPREAD_CALLS)))
    counts = {address: served(address, method) - before[address] for address in replicas}
    print(f"{method}: {', '.join(f'{a} {c:.0f}' for a, c in counts.items())} of {SPREAD_CALLS}", flush=True)
    problems = []
    if sum(counts.values()) != SPREAD_CALLS:
        problems.append(f"{method}: the replicas served {sum(counts.values()):.0f} calls, not {SPREAD_CALLS}")
    low, high = SHARE
    problems += [
        f"{method}: {address} served {count:.0f} of {SPREAD_CALLS} (outside {low:.0%}–{high:.0%})"
        for address, count in counts.items()
        if not low * SPREAD_CALLS <= count <= high * SPREAD_CALLS
    ]
    return problems


def check_spread(gw: Gateway, metrics: dict[str, list[str]]) -> list[str]:
    store = new_store(gw)
    group = create_store_group(gw, store)
    reader = gw.as_(unique("c"), "consumer")
    read_set = gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id)
    shop = campaigns_pb2_grpc.CampaignServiceStub(gw.channel)
    upstream = gw.as_("e2e-upstream", "upstream")
    item_id = unique("i")
    shop.ReportItem(
        campaigns_pb2.ReportItemRequest(
            store_id=store.store_id,
            item_id=item_id,
            platform=facts_pb2.PLATFORM_TAOBAO,
            sku_count=1,
            price_min_fen=100,
            price_max_fen=100,
        ),
        **upstream,
    )
    read_item = campaigns_pb2.GetItemRequest(store_id=store.store_id, item_id=item_id)
    return [
        *spread(lambda: gw.groups.GetGroupSet(read_set, **reader), metrics["groups"], "GetGroupSet"),
        *spread(lambda: shop.GetItem(read_item, **upstream), metrics["campaigns"], "GetItem"),
    ]


def check_kill(gw: Gateway, kill: str) -> list[str]:
    """Joins while ``kill`` (a container) is killed; problems with what was acknowledged."""
    store = new_store(gw)
    group = create_store_group(gw, store)
    consumers = [unique("c") for _ in range(JOINS)]
    gw.report([fact for c in consumers for fact in consumer_facts(c, follows=(store.store_id,))])
    join = gateway_pb2.JoinGroupSetRequest(group_set_id=group.group_set_id)
    lock = threading.Lock()
    acknowledged: list[str] = []
    retried: dict[str, list[str]] = {}
    killed_at: list[float] = []  # set once the kill returned; the other workers keep joining

    def joins(consumer: str) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                gw.groups.JoinGroupSet(join, **gw.as_(consumer, "consumer"))
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
                with lock:
                    retried.setdefault(consumer, []).append(code.name)
                if code not in RETRIED or attempt == ATTEMPTS:
                    return
                time.sleep(0.2 * attempt)
                continue
            with lock:
                acknowledged.append(consumer)
                due = len(acknowledged) == KILL_AFTER
            if due:
                print(f"{KILL_AFTER} joins acknowledged: killing {kill}", flush=True)
                subprocess.run(["podman", "kill", "--signal", "KILL", kill], check=True, capture_output=True)
                killed_at.append(time.monotonic())
            return

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(joins, consumers))
    failed_attempts = sum(len(codes) for codes in retried.values())
    print(
        f"joins: {len(acknowledged)} of {JOINS} acknowledged; {failed_attempts} failed attempts retried "
        f"({sorted({c for codes in retried.values() for c in codes})})",
        flush=True,
    )
    problems = []
    if not killed_at:
        problems.append(f"{kill} was never killed")
    lost = sorted(set(consumers) - set(acknowledged))
    if lost:
        problems.append(f"{len(lost)} joins never acknowledged: {lost[:5]} … ({retried.get(lost[0])})")
    members = gw.groups.GetGroupSet(
        gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), **owner(gw, store)
    ).group_set.member_count
    if members != len(acknowledged):
        problems.append(f"{len(acknowledged)} joins acknowledged, the group-set counts {members} members")
    missing = [
        consumer
        for consumer in acknowledged
        if group.group_set_id
        not in {
            m.group_set_id
            for m in gw.groups.ListMyGroups(
                gateway_pb2.ListMyGroupsRequest(), **gw.as_(consumer, "consumer")
            ).memberships
        }
    ]
    if missing:
        problems.append(f"{len(missing)} acknowledged joins are not memberships: {missing[:5]}")
    return problems


def parse_metrics(items: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in items:
        name, _, addresses = item.partition("=")
        found[name] = [a for a in addresses.split(",") if a]
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--metrics", action="append", default=[], help="process=host:port,host:port")
    parser.add_argument("--kill", required=True, help="the container to kill mid-run")
    args = parser.parse_args(argv)
    metrics = parse_metrics(args.metrics)
    gw: Any = Gateway(Deployment(args.gateway, os.environ["QUN_E2E_TOKEN_SECRET"]))
    try:
        problems = check_spread(gw, metrics) + check_kill(gw, args.kill)
    finally:
        gw.close()
    for problem in problems:
        print(f"FAIL {problem}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
