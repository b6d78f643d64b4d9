"""Every public RPC, found from the gateway's descriptors: what ``qunctl call`` invokes.

The public API is the package ``qun.gateway.v1``; each of its generated modules is imported, so
a service or method added to the protos is callable with no change here. Requests and responses
are JSON as ``google.protobuf.json_format`` writes it (camelCase names, enums by name, int64 as
strings, timestamps as RFC 3339).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

PUBLIC_PACKAGE = "qun.gateway.v1"


class UnknownRpc(LookupError):
    """No public RPC has that name."""


@dataclass(frozen=True)
class Rpc:
    method: MethodDescriptor

    @property
    def name(self) -> str:
        """``Service/Method``, as ``qunctl call`` takes it."""
        return f"{self.method.containing_service.name}/{self.method.name}"

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def streams_responses(self) -> bool:
        return bool(self.method.server_streaming)

    def request(self, data: str) -> Message:
        """The request message from JSON; unknown fields are an error, as a typo should be."""
        message = message_factory.GetMessageClass(self.method.input_type)()
        json_format.Parse(data or "{}", message)
        return message

    def invoke(
        self, channel: grpc.Channel, request: Message, metadata: list[tuple[str, str]], timeout: float | None
    ) -> Iterator[Message]:
        """The response (or each streamed response) of the call."""
        if self.method.client_streaming:
            raise UnknownRpc(f"{self.name} takes a stream of requests, which qunctl call does not send")
        response_type = message_factory.GetMessageClass(self.method.output_type)
        if self.streams_responses:
            stream = channel.unary_stream(
                self.path, request_serializer=serialize, response_deserializer=response_type.FromString
            )
            yield from stream(request, metadata=metadata, timeout=timeout)
            return
        unary = channel.unary_unary(
            self.path, request_serializer=serialize, response_deserializer=response_type.FromString
        )
        yield unary(request, metadata=metadata, timeout=timeout)


def serialize(message: Message) -> bytes:
    return message.SerializeToString()


def public_services() -> list[ServiceDescriptor]:
    """Every service of the public package, in the order the protos declare them."""
    package = importlib.import_module(PUBLIC_PACKAGE)
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"{PUBLIC_PACKAGE}.{module.name}")
    pool = descriptor_pool.Default()
    services: list[ServiceDescriptor] = []
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name.endswith("_pb2"):
            file = pool.FindFileByName(f"{PUBLIC_PACKAGE.replace('.', '/')}/{module.name[: -len('_pb2')]}.proto")
            services.extend(file.services_by_name.values())
    return services


def public_rpcs() -> list[Rpc]:
    return [Rpc(method) for service in public_services() for method in service.methods]


def find(name: str) -> Rpc:
    """``Service/Method`` or ``qun.gateway.v1.Service/Method`` (a dot before the method works too)."""
    service_name, sep, method_name = name.replace(".", "/").rpartition("/")
    if not sep:
        raise UnknownRpc(f"{name!r}: name an RPC as Service/Method, e.g. GroupService/GetGroupSet")
    service_name = service_name.replace("/", ".").removeprefix(f"{PUBLIC_PACKAGE}.")
    for rpc in public_rpcs():
        if rpc.method.containing_service.name == service_name and rpc.method.name == method_name:
            return rpc
    known = sorted({rpc.method.containing_service.name for rpc in public_rpcs()})
    raise UnknownRpc(f"no public RPC {name!r}; services: {', '.join(known)} (`qunctl call --list` lists every method)")
