"""Which process holds a TCP port: what a second ``make up`` tells instead of a bind traceback.

Reads Linux's ``/proc`` (the listening sockets in ``/proc/net/tcp*``, then each process's file
descriptors); elsewhere, or for a process of another user, the holder is "another program".
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"


@dataclass(frozen=True)
class Holder:
    port: int
    pid: int | None
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})" if self.pid else "another program"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a process could listen on ``host:port`` now (as the services bind: no SO_REUSEPORT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _listening_inodes(ports: set[int]) -> dict[str, int]:
    """socket inode → port, for the listening sockets on ``ports``."""
    found: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in ports:
                found[fields[9]] = port
    return found


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    words = [word.decode(errors="replace") for word in raw.split(b"\0") if word]
    if words and os.path.basename(words[0]).startswith("python"):
        words[0] = "python"
    return " ".join(words)[:80]


def holders(ports: list[int]) -> list[Holder]:
    """Who holds each of ``ports`` that is taken (a port free now is left out)."""
    taken = [port for port in ports if not port_is_free(port)]
    if not taken:
        return []
    inodes = _listening_inodes(set(taken))
    owners: dict[int, int] = {}
    if inodes:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                descriptors = list((entry / "fd").iterdir())
            except OSError:
                continue
            for descriptor in descriptors:
                try:
                    target = os.readlink(descriptor)
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    owners.setdefault(inodes[target[8:-1]], int(entry.name))
    return [Holder(port, owners.get(port), _command(owners[port]) if port in owners else "") for port in taken]


def one_line(found: list[Holder], names: dict[int, str]) -> str:
    """``50051 (gateway), 9451 (gateway metrics) by pid 42 (python -m gateway); …``: one line."""
    by_holder: dict[str, list[str]] = {}
    for holder in found:
        label = f"{holder.port} ({names[holder.port]})" if holder.port in names else str(holder.port)
        by_holder.setdefault(holder.describe(), []).append(label)
    return "; ".join(f"{', '.join(ports)} by {who}" for who, ports in by_holder.items())
