"""`make bench`: qun's flows measured against the machine's own gRPC limit, in one run.

Starts what it measures (the echo baseline, then the whole stack on SQLite or
PostgreSQL), seeds data, warms up, and drives each flow with the load
generator (``bench.loadgen``, its own process, 64 calls in flight). Every
figure is reported beside its target and, where the target is a ratio, as a
ratio to the echo baseline measured in the same run: a noisy machine moves
both alike. Results are printed and written to ``results/`` as JSON and
Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench import scale
from bench.echo import HOPS_ENV as ECHO_HOPS_ENV
from bench.echo import METHOD as ECHO_METHOD
from bench.echo import TARGET_ENV as ECHO_TARGET_ENV
from bench.loadgen import Call, write_calls
from bench.push import recall_push
from bench.seed import seed_members
from bench.shared import Row, Seeder, join_call, postgres_database, postgres_reachable, purchase_call
from cli.stack import Stack, free_port, wait_serving
from services.common.interceptors import INTERNAL_TOKEN_HEADER

# The flows' targets, as ratios to E2 (the measured limit of a flow of two backend calls).
JOIN_TARGET, REFUSED_TARGET, PURCHASE_TARGET = 0.6, 0.7, 0.7
SERVICES_WITH_DATABASES = ("eligibility", "groups", "campaigns", "push")


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rows: list[Row] = []
        self.echo_rps = 0.0
        self.call_limits: dict[int, float] = {}  # backend calls per flow -> the proxy baseline's rate

    # -- plumbing ----------------------------------------------------------------------------

    def progress(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def load(
        self,
        target: str,
        calls: list[Call],
        *,
        cycle: bool = False,
        duration: float | None = None,
        warmup: float | None = None,
    ) -> dict[str, Any]:
        path = self.work / f"calls-{uuid.uuid4().hex[:6]}.jsonl"
        write_calls(path, calls)
        command = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--target",
            target,
            "--calls",
            str(path),
            "--concurrency",
            str(self.args.concurrency),
            "--duration",
            str(duration or self.args.duration),
            "--warmup",
            str(self.args.warmup if warmup is None else warmup),
        ]
        if cycle:
            command.append("--cycle")
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return dict(json.loads(done.stdout))

    def ratio_row(self, name: str, result: dict[str, Any], target: float, ok_codes: set[str], *, calls: int) -> None:
        """A flow's rate as a ratio to the measured limit of a flow making as many backend ``calls`` (and to E)."""
        good = sum(n for code, n in result["codes"].items() if code in ok_codes)
        rate = good / result["seconds"] if result["seconds"] else 0.0
        limit = self.call_limits.get(calls, 0.0)
        of_limit = rate / limit if limit else 0.0
        of_e = rate / self.echo_rps if self.echo_rps else 0.0
        self.rows.append(
            Row(
                name,
                f"{rate:,.0f}/s = {of_limit:.2f} × E{calls}, {of_e:.2f} × E"
                f" (p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms)",
                f"≥ {target:.2f} × E{calls}",
                of_limit >= target,
                result,
            )
        )

    # -- rows --------------------------------------------------------------------------------

    def baseline(self) -> None:
        """E, and E1/E2: the limit of a flow that makes one or two backend calls.

        Measured in turns (E, E1, E2, E2, E1, E; each figure the mean of its two
        halves), so a machine that speeds up or slows down during the row moves
        the three alike and their ratios hold.
        """
        self.progress("baseline E: echo service on the shared runtime; E1, E2: a proxy calling it 1× or 2× per call")
        token = "bench-internal-token-0123456789"
        calls = [Call(ECHO_METHOD, b"x" * 64, ((INTERNAL_TOKEN_HEADER, token),))]
        with contextlib.ExitStack() as processes:
            echo = processes.enter_context(self.echo_process(token))
            targets = {0: echo}
            for hops in (1, 2):
                targets[hops] = processes.enter_context(self.echo_process(token, hops=hops, target=echo))
            runs: dict[int, list[dict[str, Any]]] = {hops: [] for hops in targets}
            for hops in (0, 1, 2, 2, 1, 0):
                runs[hops].append(self.load(targets[hops], calls, cycle=True, duration=self.args.duration / 2))
        rate, p50 = mean_of(runs, "per_second"), mean_of(runs, "p50_ms")
        self.echo_rps = rate[0]
        self.rows.append(Row("E  echo baseline", f"{rate[0]:,.0f}/s (p50 {p50[0]:.1f} ms)", "—", None, runs[0]))
        for hops, name in ((1, "E1 one backend call"), (2, "E2 two backend calls")):
            self.call_limits[hops] = rate[hops]
            self.rows.append(
                Row(
                    name,
                    f"{rate[hops]:,.0f}/s = {rate[hops] / rate[0]:.2f} × E (p50 {p50[hops]:.1f} ms)",
                    "— (the limit of such a flow)",
                    None,
                    runs[hops],
                )
            )

    @contextlib.contextmanager
    def echo_process(self, token: str, *, hops: int = 0, target: str = "") -> Iterator[str]:
        """An echo service (or, with ``hops``, a proxy in front of ``target``); yields its address."""
        port, metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "QUN_INTERNAL_TOKEN": token,
            "QUN_GRPC_PORT": str(port),
            "QUN_METRICS_PORT": str(metrics_port),
            "QUN_LOG_LEVEL": "WARNING",
        }
        if hops:
            env |= {ECHO_HOPS_ENV: str(hops), ECHO_TARGET_ENV: target}
        process = subprocess.Popen([sys.executable, "-m", "bench.echo"], env=env, stdout=subprocess.DEVNULL)
        try:
            address = f"127.0.0.1:{port}"
            wait_serving(address, 30)
            yield address
        finally:
            process.terminate()
            process.wait(10)

    @contextlib.contextmanager
    def stack(self) -> Iterator[Stack]:
        with contextlib.ExitStack() as cleanup:
            urls: dict[str, str] = {}
            if self.args.db == "postgres":
                urls = {name: cleanup.enter_context(postgres_database(name)) for name in SERVICES_WITH_DATABASES}
            stack = Stack(
                self.work / f"data-{uuid.uuid4().hex[:6]}",
                database_urls=urls,
                fixed_ports=False,
                extra_env={"QUN_LOG_LEVEL": "WARNING", **self.args.tracing_env},
            )
            started = time.perf_counter()
            stack.start()
            self.cold_start = time.perf_counter() - started
            try:
                yield stack
            finally:
                stack.stop()

    def flows(self) -> None:
        with self.stack() as stack:
            self.rows.append(
                Row(
                    "7  cold start",
                    f"{self.cold_start:.1f} s to every process SERVING",
                    "≤ 5 s",
                    self.cold_start <= 5.0,
                )
            )
            secret = stack.secrets["QUN_TOKEN_SECRET"]
            gateway = stack.gateway.address
            seeder = Seeder(gateway, secret)
            self.progress("seeding a store, its group-sets and eligible consumers")
            store_id, group_ids = seeder.store_with_groups("bench", sets=5)
            expected = int(self.echo_rps * 0.6 * (self.args.duration + self.args.warmup)) + 500
            joiners = seeder.consumers("j", min(expected, 25_000), follows=store_id)
            calls = [join_call(secret, c, group_ids[i % len(group_ids)]) for i, c in enumerate(joiners)]
            self.progress(f"join: {len(calls)} fresh consumers")
            joined = self.load(gateway, calls)
            self.ratio_row("2  join", joined, JOIN_TARGET, {"OK"}, calls=2)
            p50, p99 = joined["p50_ms"], joined["p99_ms"]
            self.rows.append(
                Row(
                    "2b join tail",
                    f"p99 {p99} ms = {p99 / p50 if p50 else 0:.1f} × p50",
                    "≤ 4 × p50",
                    bool(p50) and p99 <= 4 * p50,
                    {},
                )
            )

            refused = seeder.consumers("r", 200, real_name=False, score=300)
            self.progress("refused join: consumers failing C1, C2 and C9")
            result = self.load(gateway, [join_call(secret, c, group_ids[0]) for c in refused], cycle=True)
            self.ratio_row("3  refused join", result, REFUSED_TARGET, {"FAILED_PRECONDITION"}, calls=2)

            self.flash(stack, seeder, secret)
            self.size(stack, seeder, secret)
            if self.args.db == "postgres":  # the bursts a marketplace sees, on the production database
                scale.burst(self, stack, seeder, secret)
                scale.many_stores(self, stack, seeder, secret)
                scale.push_facts(self, stack, seeder, secret)

    def flash(self, stack: Stack, seeder: Seeder, secret: str) -> None:
        self.progress("flash purchase: 200 members buying one hot item")
        stock = 1000
        store_id, group_ids = seeder.store_with_groups("flash", sets=1)
        members = seeder.consumers("f", 200, follows=store_id)
        for consumer in members:
            seeder.join(consumer, group_ids[0])
        sale_id = seeder.flash_sale(store_id, group_ids[0], "hot", stock)
        attempts = int(self.echo_rps * 0.6 * (self.args.duration + self.args.warmup)) + 1000
        calls = [
            purchase_call(secret, members[i % len(members)], store_id, "hot", sale_id, f"p{i}") for i in range(attempts)
        ]
        result = self.load(stack.gateway.address, calls)
        self.ratio_row(
            "4  flash purchase", result, PURCHASE_TARGET, {"OK", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}, calls=2
        )
        left, sold = seeder.stock_and_sold(store_id, "hot")
        oversold = max(0, sold - stock) + max(0, -left)
        self.rows.append(
            Row(
                "4b oversold",
                f"{oversold} (sold {sold} of {stock}, stock left {left})",
                "0",
                oversold == 0,
                {"codes": result["codes"]},
            )
        )

    def size(self, stack: Stack, seeder: Seeder, secret: str) -> None:
        self.progress("size: a new store and a store of 500,000 members (seeded directly)")
        # Two sets each, one per run of the store: a run's joiners fill at most one set (5,000 seats).
        small_store, small_groups = seeder.store_with_groups("small", sets=2)
        big_store, big_groups = seeder.store_with_groups("big", sets=2)
        seed_members(stack.env_for("groups"), big_store, big_groups[0], 500_000)  # a store's owner key is its id
        # Small, big, big, small: a machine that speeds up or slows down during the row moves both alike.
        stores = {"small": (small_store, small_groups), "big": (big_store, big_groups)}
        runs: dict[str, list[dict[str, Any]]] = {"small": [], "big": []}
        duration = min(self.args.duration, 5.0) / 2
        # Enough joiners for the warm-up and the measured window at the machine's pace (a set holds 5,000).
        joiners = min(int(self.echo_rps * 0.6 * (duration + self.args.warmup)) + 200, 4_500)
        for n, label in enumerate(("small", "big", "big", "small")):
            store_id, groups = stores[label]
            people = seeder.consumers(f"z{label}{n}", joiners, follows=store_id)
            group_set = groups[len(runs[label])]
            runs[label].append(
                self.load(stack.gateway.address, [join_call(secret, c, group_set) for c in people], duration=duration)
            )
        p50 = mean_of(runs, "p50_ms")
        measured = all(run["calls"] > 0 for label in runs for run in runs[label])
        ratio = p50["big"] / p50["small"] if measured and p50["small"] else float("inf")
        self.rows.append(
            Row(
                "5  size",
                f"join p50 {p50['big']:.1f} ms at 500,000 ÷ {p50['small']:.1f} ms in a new store = "
                f"{ratio:.2f} (each the mean of two runs: small, big, big, small)",
                "≤ 1.2",
                ratio <= 1.2,
                runs,
            )
        )

    def push(self) -> None:
        self.rows.append(recall_push(self))

    # -- report ------------------------------------------------------------------------------

    def report(self) -> str:
        header = (
            f"qun bench — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
            f"db {self.args.db}, tracing {self.args.tracing}"
        )
        lines = [header, "", "| row | figure | target | met |", "|---|---|---|---|"]
        for row in self.rows:
            met = "—" if row.met is None else ("yes" if row.met else "NO")
            lines.append(f"| {row.name} | {row.figure} | {row.target} | {met} |")
        return "\n".join(lines)


@contextlib.contextmanager
def tracing_sink(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The ``OTEL_*`` settings of the run: none (tracing off), or 1% sampled and exported over OTLP to a
    collector in this process, which keeps what it receives as a real one would."""
    if args.tracing == "off":
        yield {}
        return
    from tests.support.otlp import Collector

    with Collector() as collector:
        yield {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        }
        print(f"tracing: {len(collector.spans())} spans received")


Key = TypeVar("Key")


def mean_of(runs: dict[Key, list[dict[str, Any]]], figure: str) -> dict[Key, float]:
    """Each key's ``figure`` averaged over its runs (the halves of a row measured in turns)."""
    return {key: sum(run[figure] for run in results) / len(results) for key, results in runs.items()}


def run_one(args: argparse.Namespace) -> list[Row]:
    """Every row on one database: the baselines, the flows, the bursts (PostgreSQL), the push."""
    with tempfile.TemporaryDirectory(prefix="qun-bench-") as work, tracing_sink(args) as traced:
        bench = Bench(argparse.Namespace(**{**vars(args), "tracing_env": traced}), Path(work))
        steps: list[Callable[[], None]] = [bench.baseline, bench.flows, bench.push]
        for step in steps:
            step()
    table = bench.report()
    print("\n" + table)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"bench-{args.db}{'-traced' if args.tracing != 'off' else ''}-{stamp}"
    (args.results / f"{name}.md").write_text(table + "\n")
    (args.results / f"{name}.json").write_text(
        json.dumps([row.__dict__ for row in bench.rows], indent=2, ensure_ascii=False, default=str)
    )
    print(f"\nwritten to {args.results}/{name}.md and .json")
    return bench.rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgres", "both"],
        default="both",
        help="both: SQLite, then PostgreSQL when TEST_DATABASE_URL's server answers",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument(
        "--tracing",
        choices=["off", "sampled"],
        default="off",
        help="sampled: every process traces 1%% of requests (OTEL_TRACES_SAMPLER_ARG=0.01) to an OTLP collector",
    )
    args = parser.parse_args(argv)
    databases = [args.db] if args.db != "both" else ["sqlite", *(["postgres"] if postgres_reachable() else [])]
    if args.db == "both" and "postgres" not in databases:
        print("PostgreSQL not reachable (TEST_DATABASE_URL): SQLite only")
    for db in databases:
        run_one(argparse.Namespace(**{**vars(args), "db": db}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
