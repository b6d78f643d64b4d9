"""The gateway's HTTP port: every public RPC in the Connect protocol, the ops console, health, and CORS.

Served by hypercorn (HTTP/1.1, and HTTP/2 without TLS by prior knowledge or
upgrade) as one of the gateway's loops: it starts once the gRPC port serves,
and stops with it on SIGTERM. Each request gets a request id (the caller's
``x-request-id`` or a new one) that the gRPC call carries and the answer
repeats, so a caller has something to quote. ``docs/adr/0012-json-over-http.md``
says why the calls go through the gateway's own gRPC port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.middleware.cors import CORSMiddleware

from gateway import metrics
from gateway.connect import ConnectApp, endpoints
from services.common.interceptors import REQUEST_ID_HEADER
from services.common.logs import request_id_or_new
from services.common.loops import Loop
from services.common.tracing import TRACE_ID_HEADER

log = logging.getLogger("qun.http")

HEALTH_PATH = "/healthz"
CONSOLE_PATH = "/console"
CONSOLE_FILES = Path(__file__).parent / "console"
HEALTH_TIMEOUT_SECONDS = 1.0
# What a browser on another origin may send and read (when CORS is on).
CORS_HEADERS = (
    "authorization",
    "content-type",
    "connect-protocol-version",
    "connect-timeout-ms",
    REQUEST_ID_HEADER,
    "traceparent",
)
CORS_EXPOSED = (REQUEST_ID_HEADER, TRACE_ID_HEADER)


class HttpFront:
    """Routes a request: health, or a Connect call (each with its request id, counted and timed)."""

    def __init__(self, channel: grpc.aio.Channel, services: Sequence[Any]) -> None:
        self.connect = ConnectApp(endpoints(channel, services))
        self.health = health_pb2_grpc.HealthStub(channel)
        self.console = Console(CONSOLE_FILES)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to start (the gateway is serving before this server starts)
        if scope["path"] == HEALTH_PATH:
            await self._health(send)
            return
        if scope["path"] in ("/", CONSOLE_PATH) or scope["path"].startswith(f"{CONSOLE_PATH}/"):
            await self.console(scope, send)
            return
        request_id = request_id_or_new(_header(scope, REQUEST_ID_HEADER))
        scope = _with_header(scope, REQUEST_ID_HEADER, request_id)
        procedure = scope["path"] if scope["path"] in self.connect.paths else "unknown"
        status = 0
        start = time.perf_counter()

        async def answer(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message["headers"], (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.connect(scope, receive, answer)
        finally:
            metrics.http_requests.labels(procedure, str(status)).inc()
            metrics.http_seconds.labels(procedure).observe(time.perf_counter() - start)

    async def _health(self, send: Any) -> None:
        """200 while the gateway's gRPC port reports SERVING (what the Connect calls go through), else 503."""
        try:
            reply = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_SECONDS)
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            serving = False
        body = json.dumps({"status": "SERVING" if serving else "NOT_SERVING"}).encode()
        await _answer(send, 200 if serving else 503, [(b"content-type", b"application/json")], body)


class Console:
    """The ops console's few files (``gateway/console``), read once and served from memory.

    Only the files named here are served, so no path a browser sends can reach another file. The page
    runs no script but its own and is never framed (a push's text is a merchant's words).
    """

    TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
    HEADERS = [
        (
            b"content-security-policy",
            b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-cache"),
    ]

    def __init__(self, folder: Path) -> None:
        self.files = {
            f"{CONSOLE_PATH}/{path.name}": (self.TYPES[path.suffix].encode(), path.read_bytes())
            for path in sorted(folder.iterdir())
            if path.suffix in self.TYPES
        }

    async def __call__(self, scope: Any, send: Any) -> None:
        path = scope["path"]
        if path in ("/", CONSOLE_PATH):
            await _answer(send, 308, [(b"location", f"{CONSOLE_PATH}/".encode())], b"")
            return
        found = self.files.get(f"{CONSOLE_PATH}/index.html" if path == f"{CONSOLE_PATH}/" else path)
        if found is None or scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 404, [(b"content-type", b"text/plain")], b"not found")
            return
        content_type, body = found
        await _answer(send, 200, [(b"content-type", content_type), *self.HEADERS], body)


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Any, name: str) -> str:
    wanted = name.encode()
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            text: str = value.decode("latin-1")
            return text
    return ""


def _with_header(scope: Any, name: str, value: str) -> Any:
    wanted = name.encode()
    headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() != wanted]
    return {**scope, "headers": [*headers, (wanted, value.encode("latin-1"))]}


def with_cors(app: Any, origins: Sequence[str]) -> Any:
    """``app`` behind CORS for ``origins`` (``*`` for any); as it is when there are none (the default)."""
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=list(CORS_HEADERS),
        expose_headers=list(CORS_EXPOSED),
        max_age=600,
    )


def listening_socket(bind: str) -> socket.socket:
    """The HTTP port bound and listening at start, so a port in use stops the gateway from starting at all."""
    host, _, port = bind.rpartition(":")
    sock = socket.create_server((host.strip("[]"), int(port)), reuse_port=False, backlog=1024)
    sock.set_inheritable(True)
    return sock


def http_loop(app: Any, sock: socket.socket, grace_seconds: float) -> Loop:
    """The HTTP server as a loop of the gateway: serves ``app`` on ``sock`` until the process stops."""
    bind = "{}:{}".format(*sock.getsockname()[:2])
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn closes what it serves; the app closes ``sock``
    config.graceful_timeout = grace_seconds
    config.accesslog = None  # each call is logged once, by the gRPC side it goes through
    config.errorlog = log

    async def run(stopping: asyncio.Event) -> None:
        log.info("serving http", extra={"fields": {"http": bind}})
        await serve(app, config, shutdown_trigger=stopping.wait)

    return Loop("http", run)
