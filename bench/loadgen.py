"""A closed-loop gRPC load generator: N calls in flight, from a file of prepared calls.

    python -m bench.loadgen --target 127.0.0.1:50051 --calls calls.jsonl \
        --concurrency 64 --duration 10 --warmup 2

Each line of the calls file is one unary call: ``{"method": "/pkg.Service/Method",
"request": <base64 of the serialized request>, "metadata": [[key, value], ...]}``.
Calls are taken in order, each at most once (so a flow that must not repeat —
a join by a fresh consumer — gets a fresh call); the run ends at the duration
or when the calls run out. With ``--cycle`` the calls repeat instead (for
calls that change nothing, such as a refused join). Prints one JSON object: counts by status code,
calls per second over the measured window, and latency percentiles.

It runs as its own process so it does not share a core's event loop with
the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class Call:
    method: str
    request: bytes
    metadata: tuple[tuple[str, str], ...]


def load_calls(path: Path) -> list[Call]:
    calls = []
    with path.open() as lines:
        for line in lines:
            if line.strip():
                item = json.loads(line)
                calls.append(
                    Call(item["method"], base64.b64decode(item["request"]), tuple(tuple(m) for m in item["metadata"]))
                )
    return calls


def write_calls(path: Path, calls: list[Call]) -> None:
    with path.open("w") as out:
        for call in calls:
            out.write(
                json.dumps(
                    {
                        "method": call.method,
                        "request": base64.b64encode(call.request).decode(),
                        "metadata": [list(m) for m in call.metadata],
                    }
                )
                + "\n"
            )


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run(
    target: str, calls: list[Call], concurrency: int, duration: float, warmup: float, cycle: bool = False
) -> dict[str, object]:
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    measured = 0
    next_call = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + duration
    async with grpc.aio.insecure_channel(target) as channel:
        methods = {m: channel.unary_unary(m) for m in {c.method for c in calls}}

        async def worker() -> None:
            nonlocal next_call, measured
            while True:
                now = time.perf_counter()
                if now >= stop_at or (next_call >= len(calls) and not cycle):
                    return
                call = calls[next_call % len(calls)]
                next_call += 1
                begin = time.perf_counter()
                try:
                    await methods[call.method](call.request, metadata=call.metadata, timeout=30)
                    code = "OK"
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                end = time.perf_counter()
                if begin >= measure_from and end <= stop_at:
                    codes[code] += 1
                    latencies.append(end - begin)
                    measured += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    window = min(time.perf_counter(), stop_at) - measure_from
    latencies.sort()
    return {
        "calls": measured,
        "codes": dict(codes),
        "seconds": round(window, 3),
        "per_second": round(measured / window, 1) if window > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "ran_out": next_call >= len(calls) and not cycle,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--calls", required=True, type=Path)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--cycle", action="store_true", help="repeat the calls instead of ending when they run out")
    args = parser.parse_args(argv)
    calls = load_calls(args.calls)
    result = asyncio.run(run(args.target, calls, args.concurrency, args.duration, args.warmup, args.cycle))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
