"""Prometheus metrics with the names the standard gRPC exporters use.

``grpc_server_*`` for every process, ``grpc_client_*`` for the gateway's calls
downstream; domain metrics live with their service. Each process serves them
on its own port at ``/metrics``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram, start_http_server

LABELS = ("grpc_service", "grpc_method", "grpc_type")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

server_started = Counter("grpc_server_started_total", "RPCs started on the server.", LABELS)
server_handled = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code.", (*LABELS, "grpc_code")
)
server_handling_seconds = Histogram(
    "grpc_server_handling_seconds", "Time to handle an RPC on the server.", LABELS, buckets=LATENCY_BUCKETS
)
client_started = Counter("grpc_client_started_total", "RPCs started by this process as a client.", LABELS)
client_handled = Counter(
    "grpc_client_handled_total", "RPCs completed as a client, by status code.", (*LABELS, "grpc_code")
)
client_handling_seconds = Histogram(
    "grpc_client_handling_seconds", "Time until a client RPC completed.", LABELS, buckets=LATENCY_BUCKETS
)
internal_errors = Counter(
    "qun_internal_errors_total", "Unexpected exceptions turned into INTERNAL (each is a bug).", LABELS[:2]
)


class MethodSeries:
    """One method's started, handled and latency series on one side, their labels resolved once.

    ``labels()`` looks the child up under a lock on every call; resolved here,
    a call costs three increments (the handled series, one per status code, as
    each code first occurs).
    """

    __slots__ = ("started", "seconds", "_handled_family", "_labels", "_handled")

    def __init__(self, started: Counter, handled: Counter, seconds: Histogram, labels: tuple[str, ...]) -> None:
        self.started = started.labels(*labels)
        self.seconds = seconds.labels(*labels)
        self._handled_family = handled
        self._labels = labels
        self._handled: dict[str, Any] = {}

    def handled(self, code: str) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._handled_family.labels(*self._labels, code)
        return child


def server_series(labels: tuple[str, ...]) -> MethodSeries:
    return MethodSeries(server_started, server_handled, server_handling_seconds, labels)


def client_series(labels: tuple[str, ...]) -> MethodSeries:
    return MethodSeries(client_started, client_handled, client_handling_seconds, labels)


def serve_metrics(addr: str, port: int) -> int:
    """Starts the /metrics HTTP server; returns the bound port (useful with port 0)."""
    server, _thread = start_http_server(port, addr=addr)
    return int(server.server_port)
