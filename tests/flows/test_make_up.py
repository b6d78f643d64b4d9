"""`make up` runs `qunctl up`: every process SERVING, endpoints printed, clean stop on Ctrl-C."""

from __future__ import annotations

import os
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
