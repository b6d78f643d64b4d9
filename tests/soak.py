"""Soak: mixed load on a local stack for a long while; memory, latency and errors over time.

    python -m tests.soak --seconds 600 [--db sqlite|postgres] [--workers 3]

Joins, purchases, push submissions and approvals run through the gateway (the
fault suite's load, ``tests/support/load.py``) while the clock moves a day every
few seconds so the dispatcher sends. Every few seconds the resident memory of
each process is read from ``/proc/<pid>/status``. The report gives, per minute,
the calls, p50/p99 latency and the codes; and per process the RSS after warm-up
and at the end. It exits non-zero when memory grows past the allowance after
warm-up, p99 drifts, or a call ends with anything but OK or an expected refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.support.load import Load
from tests.support.stack import running_stack

SAMPLE_EVERY = 5.0
# Refusals a correct platform may give this load (rate limits, rules); anything else is an error.
EXPECTED = {"OK", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "ALREADY_EXISTS"}
# After warm-up, each process may grow this much (allocator noise, caches filling) and no more.
RSS_ALLOWANCE_FRACTION = 0.15
RSS_ALLOWANCE_KB = 8 * 1024
# The last minute's p99 may be this many times the first measured minute's, plus a floor.
P99_DRIFT_FACTOR = 2.0
P99_DRIFT_FLOOR_MS = 20.0


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def soak(seconds: float, warmup: float, database: str, workers: int, tmp: Path) -> int:
    with running_stack(tmp, database) as running:
        gw = running.client()
        load = Load(running, gw, workers=workers, keep_calls=False)
        samples: list[tuple[float, dict[str, int]]] = []
        try:
            tasks = await load.run(shops=4)
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < seconds:
                await asyncio.sleep(min(SAMPLE_EVERY, max(0.0, seconds - elapsed)))
                pids = {name: process.pid for name, process in running.stack.processes.items()}
                samples.append((time.monotonic() - began, {name: rss_kb(pid) for name, pid in pids.items()}))
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        finally:
            load.stop.set()
            await gw.close()

    # -- report ------------------------------------------------------------------------------------
    by_minute: dict[int, list[float]] = {}
    codes_by_minute: dict[int, Counter[str]] = {}
    last_minute = max(0, math.ceil(seconds / 60) - 1)
    for start, latency, code in load.latencies:
        # Minutes of the run; the calls still draining after it count in its last minute.
        minute = min(max(0, int((start - began) // 60)), last_minute)
        by_minute.setdefault(minute, []).append(latency * 1000)
        codes_by_minute.setdefault(minute, Counter())[code] += 1
    failures: list[str] = []
    print(f"\nsoak: {seconds:.0f}s on {database}, {workers} workers, warm-up {warmup:.0f}s")
    print(f"{'minute':>6} {'calls':>7} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8}  codes")
    p99s: list[tuple[int, float]] = []
    for minute in sorted(by_minute):
        values = by_minute[minute]
        p50, p99 = percentile(values, 0.50), percentile(values, 0.99)
        span = min(60.0, seconds - minute * 60) or 60.0
        print(
            f"{minute:>6} {len(values):>7} {len(values) / span:>8.1f} {p50:>8.1f} {p99:>8.1f}  "
            f"{dict(codes_by_minute[minute])}"
        )
        if minute * 60 >= warmup and len(values) >= 50:
            p99s.append((minute, p99))
    codes: Counter[str] = Counter()
    for (_, code), n in load.codes.items():
        codes[code] += n
    print("codes:", dict(codes))
    unexpected = {code: n for code, n in codes.items() if code not in EXPECTED}
    if unexpected:
        failures.append(f"unexpected codes {unexpected}")
    counts = load.counts()
    print(
        f"requests: sent {counts['sent']} (logical {counts['requests']}), acknowledged {counts['acknowledged']}, "
        f"approvals {counts['reviews_acknowledged']}"
    )

    after_warmup = [s for s in samples if s[0] >= warmup] or samples
    first, last = after_warmup[0][1], samples[-1][1]
    print(f"{'process':<12} {'start RSS MB':>13} {'end RSS MB':>11} {'growth':>8}")
    for name in first:
        start_kb, end_kb = first[name], last.get(name, 0)
        growth = (end_kb - start_kb) / start_kb if start_kb else 0.0
        flat = end_kb <= start_kb * (1 + RSS_ALLOWANCE_FRACTION) + RSS_ALLOWANCE_KB
        print(
            f"{name:<12} {start_kb / 1024:>13.1f} {end_kb / 1024:>11.1f} {growth:>+8.1%}{'' if flat else '  GROWING'}"
        )
        if not flat:
            failures.append(f"{name} RSS {start_kb / 1024:.1f} -> {end_kb / 1024:.1f} MB")
    if len(p99s) >= 2:
        (m0, base), (m1, end) = p99s[0], p99s[-1]
        if end > base * P99_DRIFT_FACTOR + P99_DRIFT_FLOOR_MS:
            failures.append(f"p99 drifted from {base:.1f} ms (minute {m0}) to {end:.1f} ms (minute {m1})")
    print("soak:", "OK" if not failures else "FAILED: " + "; ".join(failures))
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    parser.add_argument("--warmup", type=float, default=None, help="default: a sixth of the run, at most 120 s")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(120.0, args.seconds / 6)
    with tempfile.TemporaryDirectory(prefix="qun-soak-") as tmp:
        return asyncio.run(soak(args.seconds, warmup, args.db, args.workers, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
