"""Errors as canonical gRPC statuses with ``google.rpc`` details.

Servicers and rules raise a ``ServiceError``; the error interceptor turns it
into a status whose details carry one ``ErrorInfo`` (reason, SPEC rule ids,
figures) and, depending on the kind, ``BadRequest`` field violations,
``PreconditionFailure`` violations (one per failed rule) or ``ResourceInfo``.
Clients read them back with ``status_from_error`` / ``failures_from_status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from qun.common.v1 import verdict_pb2

DOMAIN = "qun"
# A status travels in trailers, which peers cap (8 KiB by default): texts that may
# echo a caller's input are clipped to these many UTF-8 bytes, and field
# violations are listed while they fit in MAX_VIOLATIONS_BYTES (then one more
# says how many were left out).
MAX_MESSAGE_BYTES = 400
MAX_DETAIL_BYTES = 160
MAX_VIOLATIONS_BYTES = 2500


def clip(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, marked with "…" when cut."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode("utf-8", errors="ignore") + "…"


@dataclass(frozen=True)
class Failure:
    """One SPEC rule that refused, with the figures it compared."""

    rule_id: str
    reason: str
    message: str
    figures: Mapping[str, str] = field(default_factory=dict)

    def to_proto(self) -> verdict_pb2.RuleFailure:
        return verdict_pb2.RuleFailure(
            rule_id=self.rule_id, reason=self.reason, message=self.message, figures=dict(self.figures)
        )

    @classmethod
    def from_proto(cls, msg: verdict_pb2.RuleFailure) -> Failure:
        return cls(msg.rule_id, msg.reason, msg.message, dict(msg.figures))


def verdict(failures: Sequence[Failure]) -> verdict_pb2.Verdict:
    return verdict_pb2.Verdict(allowed=not failures, failures=[f.to_proto() for f in failures])


def failures_of(msg: verdict_pb2.Verdict) -> list[Failure]:
    return [Failure.from_proto(f) for f in msg.failures]


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """An expected refusal; never logged with a traceback."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        message = clip(message, MAX_MESSAGE_BYTES)
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = {k: clip(v, MAX_DETAIL_BYTES) for k, v in (metadata or {}).items()}

    def details(self) -> list[object]:
        return []

    def to_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        packed = []
        for detail in [info, *self.details()]:
            any_msg = any_pb2.Any()
            any_msg.Pack(detail)
            packed.append(any_msg)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation]):
        self.violations = list(violations)
        text = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid argument: {text}", metadata={"fields": ",".join(v.field for v in self.violations)})

    @classmethod
    def one(cls, field_name: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field_name, description)])

    def details(self) -> list[object]:
        listed = error_details_pb2.BadRequest()
        size = 0
        for index, v in enumerate(self.violations):
            item = error_details_pb2.BadRequest.FieldViolation(
                field=clip(v.field, MAX_DETAIL_BYTES), description=clip(v.description, MAX_DETAIL_BYTES)
            )
            size += item.ByteSize() + 3
            if size > MAX_VIOLATIONS_BYTES:
                left = len(self.violations) - index
                listed.field_violations.add(field="…", description=f"and {left} more violations")
                break
            listed.field_violations.append(item)
        return [listed]


class RuleRefusal(ServiceError):
    """One or more SPEC rules refuse; every failed rule is listed (SPEC X1)."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, failures: Sequence[Failure], *, code: grpc.StatusCode | None = None):
        if not failures:
            raise ValueError("a refusal needs at least one failed rule")
        self.failures = list(failures)
        if code is not None:
            self.code = code
        metadata = {"rules": ",".join(dict.fromkeys(f.rule_id for f in self.failures))}
        for f, prefix in zip(self.failures, figure_prefixes(self.failures), strict=True):
            for name, value in f.figures.items():
                metadata[f"{prefix}.{name}"] = str(value)
        text = "; ".join(f"{f.rule_id} {f.message}" for f in self.failures)
        super().__init__(text, reason=self.failures[0].reason, metadata=metadata)

    def details(self) -> list[object]:
        """One ``PreconditionFailure`` violation per failure, and every failure whole in a ``Verdict``.

        ``ErrorInfo`` metadata is a flat map, so several failures of one rule
        (E2's orders and its level) keep their figures under keys that cannot
        collide (``figure_prefixes``); the ``qun.common.v1.Verdict`` detail
        carries each failure with its own figures, for clients that read protos.
        """
        return [
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=f.rule_id, subject=f.reason, description=clip(f.message, MAX_DETAIL_BYTES)
                    )
                    for f in self.failures
                ]
            ),
            verdict_pb2.Verdict(
                allowed=False,
                failures=[
                    verdict_pb2.RuleFailure(
                        rule_id=f.rule_id,
                        reason=f.reason,
                        message=clip(f.message, MAX_DETAIL_BYTES),
                        figures={k: clip(str(v), MAX_DETAIL_BYTES) for k, v in f.figures.items()},
                    )
                    for f in self.failures
                ],
            ),
        ]


def figure_prefixes(failures: Sequence[Failure]) -> list[str]:
    """The ``ErrorInfo`` key prefix of each failure's figures: its rule id, then ``<rule>#2``, ``<rule>#3`` …

    for the second and later failures of the same rule, so no figure overwrites another.
    """
    seen: dict[str, int] = {}
    prefixes = []
    for f in failures:
        seen[f.rule_id] = seen.get(f.rule_id, 0) + 1
        prefixes.append(f.rule_id if seen[f.rule_id] == 1 else f"{f.rule_id}#{seen[f.rule_id]}")
    return prefixes


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, name: str):
        self.resource_type = resource_type
        self.name = name
        super().__init__(f"{resource_type} {name!r} not found", metadata={"resource_type": resource_type, "name": name})

    def details(self) -> list[object]:
        return [
            error_details_pb2.ResourceInfo(
                resource_type=self.resource_type, resource_name=clip(self.name, MAX_DETAIL_BYTES)
            )
        ]


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"

    def __init__(self, message: str, *, rule_id: str = "", reason: str | None = None):
        super().__init__(message, reason=reason, metadata={"rules": rule_id} if rule_id else None)


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class Unavailable(ServiceError):
    """A dependency (the database) cannot be reached now; the caller may retry, with its request id."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class Aborted(ServiceError):
    """A concurrent change made the request stale; the caller may retry it."""

    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


def status_from_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> status_pb2.Status | None:
    """The rich status a peer sent, or None when it sent only code and text.

    None too when the details do not match the call's code: the peer's status
    never arrived whole (e.g. its trailers were over the size limit).
    """
    try:
        return rpc_status.from_call(error)
    except ValueError:
        return None


def failures_from_status(status: status_pb2.Status | None) -> list[Failure]:
    """The failed rules of a refusal: from its ``Verdict`` detail, else its PreconditionFailure and ErrorInfo."""
    if status is None:
        return []
    for detail in status.details:
        if detail.Is(verdict_pb2.Verdict.DESCRIPTOR):
            found = verdict_pb2.Verdict()
            detail.Unpack(found)
            return failures_of(found)
    info = error_info(status)
    figures_by_prefix: dict[str, dict[str, str]] = {}
    if info is not None:
        for key, value in info.metadata.items():
            prefix, _, name = key.partition(".")
            if name:
                figures_by_prefix.setdefault(prefix, {})[name] = value
    violations: list[error_details_pb2.PreconditionFailure.Violation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            pf = error_details_pb2.PreconditionFailure()
            detail.Unpack(pf)
            violations.extend(pf.violations)
    listed = [Failure(v.type, v.subject, v.description) for v in violations]
    return [
        Failure(f.rule_id, f.reason, f.message, figures_by_prefix.get(prefix, {}))
        for f, prefix in zip(listed, figure_prefixes(listed), strict=True)
    ]


def refusal_rules(error: ServiceError) -> str:
    """The rule ids a refusal names (its ``ErrorInfo``'s ``rules``, e.g. ``C2,C9``); empty for other errors."""
    info = error_info(error.to_status())
    return info.metadata.get("rules", "") if info is not None else ""


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def field_violations(status: status_pb2.Status | None) -> list[FieldViolation]:
    if status is None:
        return []
    out: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            out.extend(FieldViolation(v.field, v.description) for v in br.field_violations)
    return out


def rule_ids(failures: Iterable[Failure]) -> list[str]:
    return [f.rule_id for f in failures]
