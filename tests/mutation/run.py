"""``make mutation``: would the unit tests notice a wrong rule? Mutation testing of the rule modules.

Cosmic Ray (a well-kept mutation tool) finds and applies each mutant; this
driver chooses the operators the rules are tested against (``config.toml``:
comparison boundaries, constants ±1, and↔or, True↔False, ``not`` dropped,
arithmetic flipped), runs every mutant against the module's unit tests in
private copies of the tree (one per core, so the working tree is never
touched), and scores the run:

- a mutant is **killed** when its tests fail for any reason (a failed
  assertion, an import or collection error, a timeout), **survives** otherwise;
- mutants that cannot change an outcome are listed, each with its reason, in
  ``equivalent.toml`` beside the config and left out of the score (an entry
  matching no mutant any more is reported, so the list cannot rot); where one
  operator makes several mutants of a line (``0`` → ``1`` and ``0`` → ``-1``)
  and only some are equivalent, the entry names the mutated line too, so it
  cannot hide its siblings;
- it prints tried / killed / survived / equivalent and the adjusted score per
  module, every survivor with its diff, and exits non-zero below the threshold.

``--changed`` runs only the modules whose source or unit tests changed since
their last full pass (fingerprints in ``verified.json``, rewritten by a
passing run), so CI pays for mutation testing only when a rule module moved.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.toml"
EQUIVALENT = HERE / "equivalent.toml"
VERIFIED = HERE / "verified.json"
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "node_modules", "data", "results", "__pycache__", "*.pyc")


@dataclass(frozen=True)
class Module:
    path: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    modules: tuple[Module, ...]
    operators: tuple[str, ...]
    threshold: float
    timeout_seconds: float


@dataclass(frozen=True)
class Equivalent:
    module: str
    function: str
    operator: str
    line: str
    reason: str
    # The line as the mutant has it (whitespace ignored); empty: every mutant of the operator on the line.
    mutated: str = ""

    def matches(self, mutant: Mutant) -> bool:
        return (
            self.module == mutant.module
            and self.function == mutant.function
            and mutant.operator.endswith(self.operator)
            and self.line == mutant.line
            and (not self.mutated or _squeezed(self.mutated) == _squeezed(mutated_line(mutant)))
        )


def _squeezed(text: str) -> str:
    return "".join(text.split())


@dataclass(frozen=True)
class Mutant:
    module: str
    operator: str
    occurrence: int
    function: str
    line_number: int
    line: str
    spec: Any = field(compare=False, repr=False)


@dataclass
class Outcome:
    mutant: Mutant
    killed: bool
    diff: str = ""


def load_config(path: Path = CONFIG) -> Config:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return Config(
        modules=tuple(Module(m["path"], tuple(m["tests"])) for m in data["module"]),
        operators=tuple(data["operators"]),
        threshold=float(data["threshold"]),
        timeout_seconds=float(data["timeout_seconds"]),
    )


def load_equivalents(path: Path = EQUIVALENT) -> list[Equivalent]:
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return [Equivalent(**entry) for entry in data.get("equivalent", [])]


def mutants_of(module: str, operators: Iterable[str]) -> list[Mutant]:
    """Every mutant of ``module`` by the chosen operators (Cosmic Ray's enumeration)."""
    import re

    from cosmic_ray.commands.init import _all_work_items

    wanted = re.compile("|".join(f"(?:{o})$" for o in operators))
    lines = (ROOT / module).read_text(encoding="utf-8").splitlines()
    found: list[Mutant] = []
    previous = os.getcwd()
    os.chdir(ROOT)
    try:
        for item in _all_work_items([Path(module)], {}):
            spec = item.mutations[0]
            if not wanted.search(spec.operator_name):
                continue
            row = spec.start_pos[0]
            found.append(
                Mutant(
                    module=module,
                    operator=spec.operator_name,
                    occurrence=spec.occurrence,
                    function=spec.definition_name or "",
                    line_number=row,
                    line=lines[row - 1].strip(),
                    spec=spec,
                )
            )
    finally:
        os.chdir(previous)
    return found


@functools.cache
def _mutated_line(module: str, operator: str, occurrence: int, row: int, operator_args: str) -> str:
    import cosmic_ray.plugins
    from cosmic_ray.mutating import mutate_code

    mutator = cosmic_ray.plugins.get_operator(operator)(**json.loads(operator_args))
    mutated = mutate_code((ROOT / module).read_text(encoding="utf-8"), mutator, occurrence)
    return "" if mutated is None else mutated.splitlines()[row - 1].strip()


def mutated_line(mutant: Mutant) -> str:
    """The mutant's line as the mutation leaves it (the mutation applied to the source in memory)."""
    args = json.dumps(getattr(mutant.spec, "operator_args", None) or {}, sort_keys=True)
    return _mutated_line(mutant.module, mutant.operator, mutant.occurrence, mutant.line_number, args)


def test_command(module: Module) -> str:
    return f"{sys.executable} -m pytest -x -q -p no:cacheprovider -o addopts= {' '.join(module.tests)}"


_WORKER_ROOT: Path | None = None


def _worker_init(copies: list[str], counter: Any) -> None:
    """Each worker process takes one private copy of the tree and works inside it."""
    global _WORKER_ROOT
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _WORKER_ROOT = Path(copies[index])
    os.chdir(_WORKER_ROOT)
    os.environ["PYTHONPATH"] = f"{_WORKER_ROOT}{os.pathsep}{_WORKER_ROOT / 'gen'}"


def _run_one(spec: Any, command: str, timeout: float) -> tuple[bool, str]:
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_item import TestOutcome

    result = mutate_and_test([spec], command, timeout)
    killed = result.test_outcome is not TestOutcome.SURVIVED  # failures, import errors, timeouts
    return killed, result.diff or ""


def run_module(
    module: Module, mutants: list[Mutant], pool: concurrent.futures.ProcessPoolExecutor, timeout: float
) -> list[Outcome]:
    command = test_command(module)
    futures = {pool.submit(_run_one, m.spec, command, timeout): m for m in mutants}
    outcomes = []
    for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
        killed, diff = future.result()
        outcomes.append(Outcome(futures[future], killed, diff))
        print(f"\r  {module.path}: {done}/{len(mutants)}", end="", flush=True)
    print()
    return sorted(outcomes, key=lambda o: (o.mutant.line_number, o.mutant.operator, o.mutant.occurrence))


def fingerprint(module: Module) -> str:
    """The module's source and its unit tests: what a verified score depends on."""
    digest = hashlib.sha256()
    paths = [ROOT / module.path, *sorted(p for t in module.tests for p in (ROOT / t).rglob("*.py"))]
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    for entry in load_equivalents():
        if entry.module == module.path:
            digest.update(repr(entry).encode())
    return digest.hexdigest()


def make_copies(count: int, base: Path) -> list[str]:
    copies = []
    for index in range(count):
        target = base / f"tree{index}"
        shutil.copytree(ROOT, target, ignore=COPY_IGNORE, symlinks=True)
        copies.append(str(target))
    return copies


def baseline(module: Module, copy: str, timeout: float) -> None:
    """The unmutated tests must pass, or no mutant's outcome means anything."""
    env = {**os.environ, "PYTHONPATH": f"{copy}{os.pathsep}{Path(copy) / 'gen'}", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(test_command(module).split(), cwd=copy, env=env, capture_output=True, timeout=timeout * 5)
    if done.returncode != 0:
        sys.stdout.write(done.stdout.decode(errors="replace")[-3000:])
        raise SystemExit(f"the unit tests of {module.path} fail without any mutation; fix them first")


@dataclass
class Score:
    module: str
    tried: int
    killed: int
    survived: list[Outcome]
    equivalent: int

    @property
    def adjusted(self) -> float:
        counted = self.tried - self.equivalent
        return 100.0 if counted == 0 else 100.0 * self.killed / counted


def report(scores: list[Score], stale: list[Equivalent], threshold: float) -> bool:
    print(f"\n{'module':<40} {'tried':>6} {'killed':>7} {'survived':>9} {'equivalent':>11} {'adjusted':>9}")
    for s in scores:
        line = f"{s.module:<40} {s.tried:>6} {s.killed:>7} {len(s.survived):>9} {s.equivalent:>11} {s.adjusted:>8.1f}%"
        print(line)
    for s in scores:
        for outcome in s.survived:
            m = outcome.mutant
            print(f"\nSURVIVED {m.module}:{m.line_number} in {m.function or '<module>'} ({m.operator} #{m.occurrence})")
            print(outcome.diff.strip() or m.line)
    for entry in stale:
        print(
            f"\nSTALE equivalent entry (matches no mutant): {entry.module} {entry.function} {entry.operator}: {entry.line}"
        )
    ok = all(s.adjusted >= threshold for s in scores) and not stale
    print(f"\nthreshold {threshold:.1f}% adjusted on every module: {'met' if ok else 'NOT met'}")
    return ok


def selected(config: Config, only: list[str], changed: bool) -> Iterator[Module]:
    verified = json.loads(VERIFIED.read_text()) if VERIFIED.exists() else {}
    for module in config.modules:
        if only and module.path not in only:
            continue
        if changed and verified.get(module.path) == fingerprint(module):
            print(f"{module.path}: unchanged since its last full pass, skipped")
            continue
        yield module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="rule modules to test (default: every one in config.toml)")
    parser.add_argument("--changed", action="store_true", help="only modules changed since their last full pass")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    config = load_config()
    equivalents = load_equivalents()
    modules = list(selected(config, args.modules, args.changed))
    if not modules:
        print("nothing to mutate")
        return 0
    started = time.monotonic()
    scores: list[Score] = []
    used: set[Equivalent] = set()
    with tempfile.TemporaryDirectory(prefix="qun-mutation-") as tmp:
        import multiprocessing

        copies = make_copies(args.workers, Path(tmp))
        counter = multiprocessing.Value("i", 0)
        with concurrent.futures.ProcessPoolExecutor(
            args.workers, initializer=_worker_init, initargs=(copies, counter)
        ) as pool:
            for module in modules:
                baseline(module, copies[0], config.timeout_seconds)
                everything = mutants_of(module.path, config.operators)
                counted, skipped = [], 0
                for mutant in everything:
                    matched = [e for e in equivalents if e.matches(mutant)]
                    used.update(matched)
                    if matched:
                        skipped += 1
                    else:
                        counted.append(mutant)
                outcomes = run_module(module, counted, pool, config.timeout_seconds)
                survived = [o for o in outcomes if not o.killed]
                scores.append(Score(module.path, len(everything), len(outcomes) - len(survived), survived, skipped))
    stale = [e for e in equivalents if e not in used and e.module in {m.path for m in modules}]
    ok = report(scores, stale, config.threshold)
    print(f"({time.monotonic() - started:.0f} s)")
    if ok:
        verified = json.loads(VERIFIED.read_text()) if VERIFIED.exists() else {}
        verified.update({m.path: fingerprint(m) for m in modules})
        VERIFIED.write_text(json.dumps(verified, indent=2, sort_keys=True) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
