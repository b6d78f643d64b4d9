"""The Connect front of the gateway (``gateway.connect``, ``gateway.http``), against a fake gRPC channel.

Each call must reach the gRPC method as the same message with the caller's token, request id and deadline;
a gRPC refusal must come back as a Connect error with the same code and details; JSON answers carry zero
and false fields; a body that is not the request is INVALID_ARGUMENT.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway.app import PUBLIC_SERVICES
from gateway.http import HttpFront, with_cors
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import gateway_pb2

CREATE = "/qun.gateway.v1.GroupService/CreateGroupSet"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


class Refusal(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, message: str, *details: Any) -> None:
        status = status_pb2.Status(code=code.value[0], message=message)
        for detail in details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
        super().__init__(code, grpc.aio.Metadata(), trailing, details=message)


class FakeChannel:
    """Records what each call was sent with; answers what ``answers`` says for its path."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, Any, dict[str, str], float | None]] = []

    def unary_unary(self, path: str, request_serializer: Any, response_deserializer: Any, **_: Any) -> Any:
        async def answer(request: Any, metadata: Any, timeout: float | None) -> Any:
            wire = request_serializer(request)  # what goes over loopback, decoded as the server would
            self.sent.append((path, type(request).FromString(wire), dict(metadata), timeout))
            found = self.answers[path]
            if isinstance(found, Exception):
                raise found
            return response_deserializer(found.SerializeToString())

        def call(request: Any, metadata: Any = (), timeout: float | None = None) -> FakeCall:
            return FakeCall(answer(request, metadata, timeout))

        return call

    def unary_stream(self, path: str, request_serializer: Any, response_deserializer: Any, **_: Any) -> Any:
        def call(request: Any, metadata: Any = (), timeout: float | None = None) -> Any:
            self.sent.append((path, request, dict(metadata), timeout))
            return Stream([response_deserializer(m.SerializeToString()) for m in self.answers[path]])

        return call


class FakeCall:
    """A unary call as grpc.aio gives it: awaited for the answer, asked for the answer's headers."""

    def __init__(self, answer: Any) -> None:
        self._answer = answer

    def __await__(self) -> Any:
        return self._answer.__await__()

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(("x-request-id", "req-1"), ("x-trace-id", TRACE_ID))


class Stream:
    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages

    async def __aiter__(self) -> AsyncIterator[Any]:
        for message in self.messages:
            yield message

    def cancel(self) -> None:
        pass


def client(channel: FakeChannel, app: Any = None) -> httpx.AsyncClient:
    front = app or HttpFront(channel, PUBLIC_SERVICES)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://gateway")


async def test_a_json_call_reaches_the_grpc_method_as_the_same_message_with_token_id_and_deadline() -> None:
    created = gateway_pb2.CreateGroupSetResponse(group_set=gateway_pb2.GroupSet(group_set_id="gs1", name="粉丝群"))
    channel = FakeChannel({CREATE: created})
    async with client(channel) as http:
        answer = await http.post(
            CREATE,
            json={"kind": "GROUP_KIND_STORE", "name": "粉丝群", "threshold": {"follow": {}}},
            headers={"authorization": "Bearer t", "connect-timeout-ms": "1500", "x-request-id": "req-1"},
        )
    assert answer.status_code == 200, answer.text
    [(path, request, metadata, timeout)] = channel.sent
    assert path == CREATE
    assert (
        request.kind == common_pb2.GROUP_KIND_STORE
        and request.name == "粉丝群"
        and request.threshold.HasField("follow")
    )
    assert metadata == {"authorization": "Bearer t", "x-request-id": "req-1"}
    assert timeout is not None and 0 < timeout <= 1.5
    assert (answer.headers["x-request-id"], answer.headers["x-trace-id"]) == ("req-1", TRACE_ID)
    body = answer.json()["groupSet"]
    # Zero and false fields are in the JSON: a client reads 0, not a missing key, at the boundaries.
    assert body["groupSetId"] == "gs1" and body["memberCount"] == 0 and body["isPublic"] is False


async def test_a_grpc_refusal_is_the_same_connect_error_with_its_details() -> None:
    violation = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="name", description="at most 32")]
    )
    channel = FakeChannel({CREATE: Refusal(grpc.StatusCode.INVALID_ARGUMENT, "name: at most 32", violation)})
    async with client(channel) as http:
        answer = await http.post(CREATE, json={"name": "x" * 40})
    assert answer.status_code == 400
    error = answer.json()
    assert (error["code"], error["message"]) == ("invalid_argument", "name: at most 32")
    [detail] = error["details"]
    assert detail["type"] == "google.rpc.BadRequest"
    assert detail["debug"] == {"fieldViolations": [{"field": "name", "description": "at most 32"}]}
    assert answer.headers["x-request-id"]  # a new one, to quote


@pytest.mark.parametrize(
    ("code", "name", "status"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", 401),
        (grpc.StatusCode.PERMISSION_DENIED, "permission_denied", 403),
        (grpc.StatusCode.FAILED_PRECONDITION, "failed_precondition", 400),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted", 429),
        (grpc.StatusCode.CANCELLED, "canceled", 499),
    ],
)
async def test_every_grpc_code_keeps_its_name(code: grpc.StatusCode, name: str, status: int) -> None:
    async with client(FakeChannel({CREATE: Refusal(code, "no")})) as http:
        answer = await http.post(CREATE, json={})
    assert (answer.status_code, answer.json()["code"]) == (status, name)


@pytest.mark.parametrize("body", [b"{not json", b'{"kind": "NO_SUCH_KIND"}', b'{"noSuchField": 1}', b"\xff\xfe"])
async def test_a_body_that_is_not_the_request_is_invalid_argument_and_calls_nothing(body: bytes) -> None:
    channel = FakeChannel({})
    async with client(channel) as http:
        answer = await http.post(CREATE, content=body, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_argument")
    assert "CreateGroupSetRequest" in answer.json()["message"]
    assert channel.sent == []


async def test_an_unknown_procedure_is_not_found() -> None:
    async with client(FakeChannel({})) as http:
        answer = await http.post("/qun.gateway.v1.GroupService/NoSuchMethod", json={})
    assert answer.status_code == 404


async def test_cors_is_off_unless_origins_are_configured() -> None:
    channel = FakeChannel({})
    preflight = {
        "origin": "https://ops.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    async with client(channel) as http:
        closed = await http.options(CREATE, headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    async with client(channel, with_cors(HttpFront(channel, PUBLIC_SERVICES), ["https://ops.example"])) as http:  # type: ignore[arg-type]
        opened = await http.options(CREATE, headers=preflight)
    assert opened.status_code == 200
    assert opened.headers["access-control-allow-origin"] == "https://ops.example"
    assert "authorization" in opened.headers["access-control-allow-headers"]


def test_the_json_codec_is_the_one_every_connect_app_reads() -> None:
    from connectrpc import _codec

    from gateway.connect import JsonCodec

    HttpFront(FakeChannel({}), PUBLIC_SERVICES)  # type: ignore[arg-type]
    assert isinstance(_codec.get_codec("json"), JsonCodec)
    encoded = _codec.get_codec("json").encode(gateway_pb2.GroupSet())  # type: ignore[union-attr]
    assert json.loads(encoded)["memberCount"] == 0


async def test_the_console_serves_its_own_files_and_nothing_else() -> None:
    async with client(FakeChannel({})) as http:
        home = await http.get("/")
        page = await http.get("/console/")
        script = await http.get("/console/console.js")
        escape = await http.get("/console/../gateway/app.py")
        other = await http.get("/console/app.py")
        posted = await http.post("/console/index.html")
    assert (home.status_code, home.headers["location"]) == (308, "/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]  # no script but its own runs
    assert script.status_code == 200 and "ListPendingReviews" in script.text
    assert [escape.status_code, other.status_code, posted.status_code] == [404, 404, 404]


@pytest.mark.parametrize("offered", ["x" * 65, "two words", "-leading-dash", "a/b\\c"])
async def test_a_request_id_that_is_not_a_well_formed_id_is_replaced_not_echoed(offered: str) -> None:
    created = gateway_pb2.CreateGroupSetResponse(group_set=gateway_pb2.GroupSet(group_set_id="gs1"))
    channel = FakeChannel({CREATE: created})
    async with client(channel) as http:
        answer = await http.post(CREATE, json={}, headers={"x-request-id": offered})
    [(_, _, metadata, _)] = channel.sent
    assert metadata["x-request-id"] != offered and len(metadata["x-request-id"]) == 32
    assert answer.headers["x-request-id"] == metadata["x-request-id"]  # the id the call was logged under
