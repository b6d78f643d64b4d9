"""A kubelet-style prober for the manifests' ``grpc`` probes, which podman 4.3 does not run.

For every pod and container: the startup probes first, then readiness and liveness, each as
the kubelet would — ``grpc.health.v1.Health/Check`` for the probe's service on the pod's
address, a new connection per attempt, the probe's ``timeoutSeconds`` per attempt, one attempt
every ``periodSeconds`` after ``initialDelaySeconds`` — until SERVING, or failed after
``failureThreshold`` attempts in a row. It proves the probes answer on the addresses and ports
written in the manifests; it does not gate traffic on readiness or restart a failed pod.

Pod addresses are on the run's own network, so it runs inside that namespace:

    nsenter --net=… python -m tests.containers.probes PLAN.json

PLAN.json lists ``{"pod", "address", "probes": [Probe fields …]}``; the exit code is 0 when
every probe answered SERVING within its budget.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.containers.k8s_manifests import PROBES, Probe


def check(address: str, probe: Probe) -> str:
    """One attempt: "SERVING", another status's name, or the error."""
    with grpc.insecure_channel(f"{address}:{probe.port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=probe.service), timeout=probe.timeout
            )
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"  # type: ignore[attr-defined]
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def run_probe(address: str, probe: Probe) -> tuple[bool, str]:
    """Attempts until SERVING or ``failure_threshold`` failures in a row; (passed, what happened)."""
    started = time.monotonic()
    time.sleep(probe.initial_delay)
    failures = 0
    while True:
        attempt_started = time.monotonic()
        outcome = check(address, probe)
        if outcome == "SERVING":
            return True, f"SERVING after {time.monotonic() - started:.1f}s ({failures + 1} attempts)"
        failures += 1
        if failures >= probe.failure_threshold:
            return False, (f"{failures} failed attempts in a row (budget {probe.budget:.0f}s); last: {outcome}")
        time.sleep(max(0.0, probe.period - (time.monotonic() - attempt_started)))


def probe_pod(target: dict[str, Any], results: list[tuple[bool, str]], lock: threading.Lock) -> None:
    probes = [Probe(**fields) for fields in target["probes"]]
    for container in sorted({p.container for p in probes}):
        ordered = sorted((p for p in probes if p.container == container), key=lambda p: PROBES.index(p.kind))
        for probe in ordered:
            passed, what = run_probe(target["address"], probe)
            line = f"{target['pod']} {container} {probe.kind} grpc :{probe.port}: {what}"
            with lock:
                results.append((passed, line))
                print(("ok   " if passed else "FAIL ") + line, flush=True)
            if not passed and probe.kind == "startupProbe":
                break  # the kubelet would restart it; the others never run


def probe_all(targets: list[dict[str, Any]]) -> bool:
    """Every pod's probes, pods side by side; True when all passed."""
    results: list[tuple[bool, str]] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=probe_pod, args=(t, results, lock), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = sum(len(t["probes"]) for t in targets)
    return len(results) == expected and all(passed for passed, _ in results)


def plan_entry(pod: str, address: str, probes: list[Probe]) -> dict[str, Any]:
    return {"pod": pod, "address": address, "probes": [asdict(p) for p in probes]}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    return 0 if probe_all(json.loads(Path(argv[0]).read_text())) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
