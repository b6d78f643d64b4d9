"""`make up` runs `qunctl up`: every process SERVING, endpoints printed, clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cli.stack import Stack, wait_serving
from services.common.processes import PROCESSES

READY = re.compile(r"all processes SERVING in ([\d.]+)s")


def test_qunctl_up_serves_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUN_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "--data-dir", str(tmp_path / "data"), "up", "--free-ports"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        output = "".join(lines)
        assert READY.search(output), output
        assert "gateway  grpc://127.0.0.1:" in output
        assert output.count("/metrics") == 5
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    assert "stopped: gateway=0, push=0, campaigns=0, groups=0, eligibility=0" in rest
    assert (tmp_path / "data" / "eligibility.db").exists() and (tmp_path / "data" / "groups.db").exists()


def test_a_stack_on_free_ports_starts_again_when_another_program_took_one(tmp_path: Path) -> None:
    """A free port is free only until bound: another program taking one costs a restart, not a failure."""
    stack = Stack(tmp_path / "data", fixed_ports=False, extra_env={"QUN_LOG_LEVEL": "WARNING"})
    taken = stack.endpoints["campaigns"].metrics_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        stack.start()
        try:
            assert stack.endpoints["campaigns"].metrics_port != taken
            assert "Address already in use" in (tmp_path / "data" / "logs" / "campaigns.log").read_text()
            for name in PROCESSES:
                wait_serving(stack.endpoints[name].address, 5)
        finally:
            stack.stop()


def _free_base() -> int:
    """A port base whose every port (gRPC, metrics, Prometheus) is free now."""
    from cli.ports import port_is_free
    from cli.stack import ports_for, prometheus_port

    for _ in range(50):
        base = random.randrange(20000, 30000, 100)
        ports = [port for pair in ports_for(base).values() for port in pair] + [prometheus_port(base)]
        if all(port_is_free(port) for port in ports):
            return base
    raise RuntimeError("no free port base")


def _qunctl(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        env=env or {k: v for k, v in os.environ.items() if not k.startswith("QUN_")},
        timeout=60,
    )


def _start_up(data: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    """`qunctl up` in its own session (as in another terminal), until it says it is serving."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "--data-dir", str(data), *args, "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "stops everything" in line:
            return process, "".join(lines)
    process.kill()
    raise AssertionError("".join(lines))


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def test_a_bad_setting_is_refused_with_the_services_own_line_before_anything_starts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUN_")}
    env["QUN_LOG_LEVEL"] = "LOUD"
    refused = _qunctl(tmp_path / "data", "up", "--free-ports", env=env)
    service = subprocess.run(
        [sys.executable, "-m", "services.eligibility"],
        capture_output=True,
        text=True,
        env={**env, "QUN_INTERNAL_TOKEN": "x" * 32, "QUN_DATA_DIR": str(tmp_path / "other")},
        timeout=60,
    )
    assert service.returncode != 0 and len(service.stderr.strip().splitlines()) == 1
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"qunctl: {service.stderr.strip()}"  # eligibility: QUN_LOG_LEVEL must be …
    assert "Traceback" not in refused.stdout + refused.stderr
    assert not list((tmp_path / "data").glob("*.db")), "nothing migrated"


def test_a_port_base_moves_every_port_and_make_down_stops_it_from_elsewhere(tmp_path: Path) -> None:
    """The documented port base, the caller's QUN_* settings reaching every process, a second `up`
    told in one line who holds which port (nothing migrated), `down` from another process."""
    from cli.stack import ports_for

    base = _free_base()
    data = tmp_path / "data"
    clock = tmp_path / "clock"
    clock.write_text("2026-03-10T09:00:00+08:00")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUN_")}
    env.update(QUN_CLOCK_FILE=str(clock), QUN_JOB_INTERVAL_SECONDS="30", QUN_LOG_LEVEL="WARNING")
    process, said = _start_up(data, {**env, "QUN_PORT_BASE": str(base)})
    try:
        ports = ports_for(base)
        assert f"gateway  grpc://127.0.0.1:{base + 1}" in said
        for name, (grpc_port, metrics_port) in ports.items():
            assert f"127.0.0.1:{grpc_port}" in said and f"127.0.0.1:{metrics_port}/metrics" in said
        state = json.loads((data / "stack.json").read_text())
        children = list(state["processes"].values())
        for pid in children:
            environ = dict(
                item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
            )
            assert environ["QUN_CLOCK_FILE"] == str(clock) and environ["QUN_JOB_INTERVAL_SECONDS"] == "30"

        # qunctl finds the gateway from the port base as the stack does.
        base_env = {**{k: v for k, v in os.environ.items() if not k.startswith("QUN_")}, "QUN_PORT_BASE": str(base)}
        token = _qunctl(data, "call", "GroupService/GetGroupSet", "--as", "o", "--role", "ops", env=base_env)
        assert "NOT_FOUND" in token.stderr or "INVALID_ARGUMENT" in token.stderr, token.stderr

        before = {path.name: path.stat().st_mtime_ns for path in data.glob("*.db")}
        second = _qunctl(data, "--port-base", str(base), "up", env=env)
        assert second.returncode == 2
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"{base + 1} (gateway)" in second.stderr and f"by pid {state['processes']['gateway']}" in second.stderr
        assert {path.name: path.stat().st_mtime_ns for path in data.glob("*.db")} == before, "nothing migrated"
        elsewhere = _qunctl(data, "--port-base", str(_free_base()), "up", env=env)
        assert elsewhere.returncode == 2 and "already running from" in elsewhere.stderr, elsewhere.stderr

        down = _qunctl(data, "down")
        assert down.returncode == 0 and "stopped the qun stack" in down.stdout, down.stdout + down.stderr
        rest, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "stopped: gateway=0, push=0, campaigns=0, groups=0, eligibility=0" in rest
        assert not _alive(children)
        assert not (data / "stack.json").exists()
        assert "no qun stack is running" in _qunctl(data, "down").stdout
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_nothing_outlives_the_stack_however_it_ends(tmp_path: Path) -> None:
    """A closed terminal (SIGHUP) stops everything in order; a supervisor killed outright takes its
    processes with it (PR_SET_PDEATHSIG), so no process is left holding a port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUN_")}
    for sig in (signal.SIGHUP, signal.SIGKILL):
        data = tmp_path / sig.name / "data"
        process, _ = _start_up(data, env, "--port-base", str(_free_base()))
        children = list(json.loads((data / "stack.json").read_text())["processes"].values())
        try:
            process.send_signal(sig)
            process.communicate(timeout=30)
            deadline = time.monotonic() + 15
            while _alive(children) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(children), (sig.name, _alive(children))
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
