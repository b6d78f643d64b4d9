"""A network namespace of the run's own, and the machine-wide netavark state podman keeps for it.

``make e2e-k8s`` gives its pods a podman network with DNS (netavark and aardvark-dns), which
means a bridge, addresses and firewall rules. They are made inside a namespace the run
creates (``ip netns add``), so nothing of the machine's own network changes, and they go with
it. Every podman call enters it with ``nsenter --net=…`` — not ``ip netns exec``, which also
makes a mount namespace per call, so what one podman call mounts the next would not see.

Rootful netavark keeps its state in ``/run/containers/networks`` whatever the configuration
says (its IP allocations and the one aardvark-dns process answering every network's names),
so two runs at once would share one DNS server living in the first run's namespace. Runs on
one machine therefore take a lock and go one at a time; each removes that state at its end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from tests.containers.shell import log, run

NETAVARK_RUN_DIR = Path("/run/containers/networks")
LOCK_FILE = Path("/run/lock/qun-e2e-k8s.lock")


@contextlib.contextmanager
def one_run_at_a_time(timeout: float = 1800) -> Iterator[None]:
    """Holds the machine's lock for runs that use netavark; waits for a run in progress."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a+") as handle:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log(f"another run holds {LOCK_FILE}; waiting for it")
                    waited = True
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{LOCK_FILE} still held after {timeout:.0f}s") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class NetworkNamespace:
    """``ip netns add`` at creation, with its loopback up; ``delete`` ends what still runs in it."""

    def __init__(self, prefix: str = "qun-e2e") -> None:
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.path = Path("/run/netns") / self.name
        run(["ip", "netns", "add", self.name])
        # The suite's own Prometheus listens on 127.0.0.1 in here.
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])

    @property
    def prefix(self) -> tuple[str, ...]:
        """What runs a command inside the namespace (network only; mounts stay the machine's)."""
        return ("nsenter", f"--net={self.path}")

    def pids(self) -> list[int]:
        listed = run(["ip", "netns", "pids", self.name], check=False, capture_output=True, text=True).stdout
        return [int(pid) for pid in listed.split()]

    def delete(self) -> None:
        """Kills whatever is left inside (a container's conmon, aardvark-dns after a failed
        teardown: every process in here is the run's), then removes the namespace."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = self.pids()
            if not left:
                break
            log(f"{len(left)} processes left in {self.name}: {signal.Signals(sig).name}")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
        run(["ip", "netns", "delete", self.name], check=False)


def remove_netavark_state(network: str) -> None:
    """The run's network out of ``/run/containers/networks``; the folder itself when no other
    network is left in it (the lock keeps other runs of this harness out meanwhile)."""
    dns_dir = NETAVARK_RUN_DIR / "aardvark-dns"
    (dns_dir / network).unlink(missing_ok=True)
    others = [p.name for p in dns_dir.iterdir() if p.name != "aardvark.pid"] if dns_dir.is_dir() else []
    if others:
        log(f"{NETAVARK_RUN_DIR} kept: other networks use it ({', '.join(others)})")
        return
    run(["rm", "-rf", "--one-file-system", str(NETAVARK_RUN_DIR)], check=False)
    with contextlib.suppress(OSError):
        NETAVARK_RUN_DIR.parent.rmdir()  # /run/containers, when nothing else is in it
