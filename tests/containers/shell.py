"""Commands, free ports, signals and clean-up shared by the deployment harnesses."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

STARTED = time.monotonic()


def log(message: str, prefix: str = "e2e") -> None:
    print(f"[{prefix} {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


class Interrupted(Exception):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so every teardown runs."""


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def unwind_on_signals() -> None:
    """SIGTERM and SIGHUP raise ``Interrupted`` in the main thread, so ``finally`` blocks tear down."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)


def run(
    cmd: list[str], env: dict[str, str] | None = None, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    return subprocess.run(cmd, env=env, check=check, stdin=subprocess.DEVNULL, **kwargs)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts anything left mounted below ``path`` (overlay layers of a
    killed run, /proc of an interrupted debootstrap) and never crosses into another filesystem."""
    if not path.exists():
        return
    prefix = f"{path.resolve()}/"
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        run(["umount", "--lazy", point], check=False)
    run(["rm", "-rf", "--one-file-system", str(path)], check=False)
