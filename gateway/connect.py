"""Every public RPC in the Connect protocol (JSON or binary over HTTP), answered by the gRPC gateway itself.

A Connect call is passed, as the same message, to the gateway's own gRPC
port over loopback, with the caller's bearer token, request id and deadline
(``connect-timeout-ms``). So one implementation serves both transports: the
same authentication, role rules, rate limits, bounds, handlers, metrics and
logs (``docs/adr/0012-json-over-http.md``). A gRPC refusal comes back as a
Connect error with the same code and the same details (``Verdict``,
``BadRequest``, ``ErrorInfo``), which the Connect JSON error form carries
both packed and decoded (``debug``).

The protocol itself (content types, envelopes, compression, the JSON error
form, streaming) is the ``connectrpc`` library's; the endpoints are built
from the public services' descriptors, so a new RPC needs nothing here.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
from connectrpc import _codec
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from services.common.interceptors import REQUEST_ID_HEADER
from services.common.server import MAX_MESSAGE_BYTES
from services.common.tracing import TRACE_ID_HEADER

log = logging.getLogger("qun.http")

# What a Connect caller's headers carry on to the gRPC call (lower case, as both transports name them).
FORWARDED_HEADERS = ("authorization", REQUEST_ID_HEADER, "traceparent", "tracestate")
STATUS_DETAILS_KEY = "grpc-status-details-bin"
TIMEOUT_HEADER = "connect-timeout-ms"
# gRPC and gRPC-Web, which the library would also serve: gRPC has its own port, and this one speaks Connect only
# (plain gRPC needs HTTP trailers that the ASGI server does not give, and was a 500 here).
GRPC_CONTENT_TYPE = "application/grpc"
STREAM_CONTENT_TYPE = "application/connect+"
STREAM_ENCODING_HEADER = b"connect-content-encoding"
UNCOMPRESSED = ("", "identity")
COMPRESSED_FLAG = 0x01  # the first bit of a stream envelope's first byte
# A body as read off the wire, compressed or not: one message and a stream envelope's 5-byte prefix.
MAX_BODY_BYTES = MAX_MESSAGE_BYTES + 5
GZIP_WINDOW = 16 + zlib.MAX_WBITS  # zlib's wbits for a gzip header and trailer


class BoundedGzip:
    """gzip bodies, read no further than a message may be long (a few compressed bytes may expand to gigabytes),
    and a body that is not gzip is the caller's error (INVALID_ARGUMENT), not an unknown one."""

    def name(self) -> str:
        return "gzip"

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        packer = zlib.compressobj(wbits=GZIP_WINDOW)
        return packer.compress(data) + packer.flush()

    def decompress(self, data: bytes | bytearray | memoryview) -> bytes:
        reader = zlib.decompressobj(wbits=GZIP_WINDOW)
        try:
            out = reader.decompress(data, MAX_MESSAGE_BYTES + 1)
        except zlib.error as error:
            raise ConnectError(Code.INVALID_ARGUMENT, f"the body is not gzip: {error}") from None
        if len(out) > MAX_MESSAGE_BYTES:
            raise ConnectError(Code.RESOURCE_EXHAUSTED, f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
        if not reader.eof:
            raise ConnectError(Code.INVALID_ARGUMENT, "the body is not gzip: it ends before its stream does")
        return out


class JsonCodec(_codec.ProtoJSONCodec[Any]):
    """JSON with every field, zero and false included (a client reads ``0``, not a missing key, at a boundary);
    a body that is not the request's JSON is the caller's error (INVALID_ARGUMENT), not an unknown one."""

    def encode(self, message: Message) -> bytes:
        return json_format.MessageToJson(
            message, always_print_fields_with_no_presence=True, indent=None, ensure_ascii=False
        ).encode()

    def decode(self, data: bytes | bytearray, message: Any) -> Any:
        try:
            json_format.Parse(bytes(data), message)
        except (json_format.ParseError, UnicodeDecodeError) as error:
            raise ConnectError(Code.INVALID_ARGUMENT, f"the body is not a {message.DESCRIPTOR.name}: {error}") from None
        return message


class ProtoCodec(_codec.ProtoBinaryCodec[Any]):
    """Binary protobuf; a body that does not decode is INVALID_ARGUMENT."""

    def decode(self, data: bytes | bytearray, message: Any) -> Any:
        try:
            message.ParseFromString(bytes(data))
        except DecodeError as error:
            raise ConnectError(Code.INVALID_ARGUMENT, f"the body is not a {message.DESCRIPTOR.name}: {error}") from None
        return message


def install_codecs() -> None:
    """Puts the two codecs above in the library's table, which every Connect application reads.

    The library has no per-application codec setting yet (its own comment says so), so the table
    is updated in place; ``tests/unit/gateway/test_connect.py`` fails if that stops taking effect.
    """
    json_codec = JsonCodec()
    _codec._codecs.update(  # noqa: SLF001 - see the docstring
        {_codec.CODEC_NAME_JSON: json_codec, _codec.CODEC_NAME_JSON_CHARSET_UTF8: json_codec}
    )
    _codec._codecs[_codec.CODEC_NAME_PROTO] = ProtoCodec()  # noqa: SLF001


def connect_error(error: grpc.aio.AioRpcError) -> ConnectError:
    """The gRPC status as a Connect error: the same code, message and details."""
    details: Sequence[Any] = ()
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            details = list(status.details)
    code = error.code()
    name = code.name.lower() if code is not None else "unknown"
    return ConnectError(Code(name) if name != "cancelled" else Code.CANCELED, error.details() or "", details)


class Forwarder:
    """Calls one public method on the gateway's own gRPC port with what the Connect request carried."""

    def __init__(self, channel: grpc.aio.Channel, method: MethodDescriptor) -> None:
        self.path = f"/{method.containing_service.full_name}/{method.name}"
        request = message_factory.GetMessageClass(method.input_type)
        output = message_factory.GetMessageClass(method.output_type)
        options = {"request_serializer": request.SerializeToString, "response_deserializer": output.FromString}
        if method.server_streaming:
            self.stream_call = channel.unary_stream(self.path, **options)
        else:
            self.unary_call = channel.unary_unary(self.path, **options)

    async def unary(self, request: Message, ctx: RequestContext[Any, Any]) -> Message:
        call = self.unary_call(request, metadata=_metadata(ctx), timeout=_timeout(ctx))
        try:
            reply: Message = await call
        except grpc.aio.AioRpcError as error:
            _trace_header(ctx, error.initial_metadata())
            raise connect_error(error) from None
        except Exception:
            raise _internal(self.path) from None
        _trace_header(ctx, await call.initial_metadata())
        return reply

    async def stream(self, request: Message, ctx: RequestContext[Any, Any]) -> AsyncIterator[Message]:
        call = self.stream_call(request, metadata=_metadata(ctx), timeout=_timeout(ctx))
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as error:
            raise connect_error(error) from None
        except Exception:
            raise _internal(self.path) from None
        finally:
            call.cancel()  # the HTTP caller went away: the gRPC stream ends with it


def _internal(path: str) -> ConnectError:
    """A failure of this front itself: logged here, INTERNAL to the caller, who learns nothing of it."""
    log.exception("the HTTP front failed a call", extra={"fields": {"method": path}})
    return ConnectError(Code.INTERNAL, "internal error")


def _trace_header(ctx: RequestContext[Any, Any], metadata: Any) -> None:
    """The trace id the gRPC answer named (``x-trace-id``), on the HTTP answer too."""
    for key, value in metadata or ():
        if key == TRACE_ID_HEADER:
            ctx.response_headers()[TRACE_ID_HEADER] = value


def _metadata(ctx: RequestContext[Any, Any]) -> list[tuple[str, str]]:
    headers = ctx.request_headers()
    return [(name, headers[name]) for name in FORWARDED_HEADERS if name in headers]


def _timeout(ctx: RequestContext[Any, Any]) -> float | None:
    header = ctx.request_headers().get(TIMEOUT_HEADER)
    if header is not None and not (header.isascii() and header.isdigit()):  # int() alone takes "-5", "+5", "1_0"
        raise ConnectError(Code.INVALID_ARGUMENT, f"{TIMEOUT_HEADER} must be 1 to 10 digits, got {header[:20]!r}")
    remaining = ctx.timeout_ms()
    return None if remaining is None else max(remaining, 1.0) / 1000.0


def endpoints(channel: grpc.aio.Channel, services: Sequence[ServiceDescriptor]) -> dict[str, Any]:
    """A Connect endpoint for every method of ``services``, keyed by its path, forwarding over ``channel``."""
    found: dict[str, Any] = {}
    for service in services:
        for method in service.methods:
            info: MethodInfo[Any, Any] = MethodInfo(
                name=method.name,
                service_name=service.full_name,
                input=message_factory.GetMessageClass(method.input_type),
                output=message_factory.GetMessageClass(method.output_type),
                idempotency_level=IdempotencyLevel.UNKNOWN,
            )
            forward = Forwarder(channel, method)
            if method.client_streaming:
                raise ValueError(f"{forward.path}: the public API has no client streams")
            found[forward.path] = (
                Endpoint.server_stream(info, forward.stream)
                if method.server_streaming
                else Endpoint.unary(info, forward.unary)
            )
    return found


def _header(scope: Any, wanted: bytes) -> str:
    """A request header's value, lower case ("" when absent)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == wanted:
            return bytes(value).decode("latin-1").strip().lower()
    return ""


async def _unsupported_media_type(send: Any) -> None:
    """415, as the library answers a content type it does not know, naming the ones this port reads."""
    headers = [(b"accept-post", b"application/json, application/proto"), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 415, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


class ConnectApp(ConnectASGIApplication[Mapping[str, Any]]):
    """The public services as one ASGI application (paths ``/<package>.<Service>/<Method>``)."""

    def __init__(self, routes: Mapping[str, Any]) -> None:
        install_codecs()
        super().__init__(
            service=routes,
            endpoints=lambda found: found,
            read_max_bytes=MAX_MESSAGE_BYTES,
            compressions=[BoundedGzip()],
        )
        self.paths = frozenset(routes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """What the library leaves open, closed before it reads a request:

        - it keeps a whole body before it weighs it: here a body is kept no further than the largest message
          (RESOURCE_EXHAUSTED), so a caller cannot make the gateway hold gigabytes;
        - gRPC and gRPC-Web content types are answered 415 (see ``GRPC_CONTENT_TYPE``);
        - a stream's message flagged compressed where no compression is named is the caller's error
          (INVALID_ARGUMENT); the library answers INTERNAL.
        """
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        content_type = _header(scope, b"content-type")
        if content_type.startswith(GRPC_CONTENT_TYPE):
            return await _unsupported_media_type(send)
        unnamed = (
            content_type.startswith(STREAM_CONTENT_TYPE) and _header(scope, STREAM_ENCODING_HEADER) in UNCOMPRESSED
        )
        read = 0

        async def guarded() -> Any:
            nonlocal read
            message = await receive()
            body = message.get("body", b"")
            refusal = None
            if unnamed and read == 0 and body and body[0] & COMPRESSED_FLAG:
                refusal = ConnectError(Code.INVALID_ARGUMENT, "a message is flagged compressed, no compression named")
            read += len(body)
            if read > MAX_BODY_BYTES:
                refusal = ConnectError(Code.RESOURCE_EXHAUSTED, f"the body is larger than {MAX_BODY_BYTES} bytes")
            if refusal is not None:
                # The rest is read and dropped, so the caller, still sending, gets the answer, not a reset.
                while message.get("type") == "http.request" and message.get("more_body", False):
                    message = await receive()
                raise refusal
            return message

        return await super().__call__(scope, guarded, send)

    @property
    def path(self) -> str:
        return "/"
