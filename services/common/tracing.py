"""One trace per request across every process (OpenTelemetry), configured by the standard ``OTEL_*`` variables.

Off by default: with no exporter asked for, no SDK is installed and no span
is made. A caller's W3C ``traceparent`` still passes from the gateway to the
backends, and log lines still carry its trace id. On: ``OTEL_TRACES_EXPORTER=otlp``
or an ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT``. The SDK's own variables then
apply: the sampler (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``,
``OTEL_TRACES_SAMPLER_ARG=0.01``), the batch processor, the exporter's
headers, and ``OTEL_SERVICE_NAME``.

What makes spans (ADR 0013):
- every process's server interceptor: one SERVER span per call;
- the gateway's backend channels: one CLIENT span per call, whose context
  travels in the call's ``traceparent``;
- the SQL: SQLAlchemy's instrumentation for the ORM units of work, and
  ``sql_span`` in the two drivers that run the hot paths' statements
  themselves (``sqlite_driver``, ``pg_driver``);
- a refusal's rule ids, on the server span of every process it passes
  through (``qun.refusal.rules``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

log = logging.getLogger("qun.tracing")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_ID_HEADER = "x-trace-id"
REFUSAL_RULES = "qun.refusal.rules"
EXPORTERS = ("otlp", "console")
# The gRPC codes that mean the server failed (OpenTelemetry's RPC conventions); the rest are answers.
SERVER_FAILURES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})

tracer = trace.get_tracer("qun")
_provider: Any = None


def enabled() -> bool:
    """Whether this process makes spans (an exporter was configured)."""
    return _provider is not None


def configure_tracing(service: str, env: Mapping[str, str]) -> bool:
    """Installs the SDK and its exporter when ``env`` asks for one; True when tracing is on."""
    global _provider
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporter == "none" or (not exporter and not endpoint):
        return False
    if exporter and exporter not in EXPORTERS:
        raise ValueError(f"OTEL_TRACES_EXPORTER must be one of {', '.join(('none', *EXPORTERS))}, got {exporter!r}")
    # Imported only when on: a process without tracing never loads the SDK.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or f"qun-{service}"})
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _provider = provider  # ``tracer`` (a proxy) makes its spans from now on
    log.info("tracing on", extra={"fields": {"exporter": exporter or "otlp", "sampler": str(provider.sampler)}})
    return True


def instrument_engine(engine: Any) -> None:
    """Spans for the SQL an SQLAlchemy engine runs (the ORM's units of work), when tracing is on."""
    if not enabled():
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(engine=engine, enable_commenter=False)


def shutdown() -> None:
    """Exports what is left (at process stop)."""
    if _provider is not None:
        _provider.shutdown()


@contextlib.contextmanager
def server_span(full_method: str, metadata: Any) -> Iterator[Span | None]:
    """The call's SERVER span, child of the caller's ``traceparent`` (a no-op when tracing is off and the
    caller sent none; with one, its context is current so logs and backend calls carry the trace)."""
    carrier = _trace_headers(metadata)
    parent = propagate.extract(carrier) if carrier else None
    if not enabled():
        if parent is None:
            yield None
            return
        token = otel_context.attach(parent)
        try:
            yield None
        finally:
            otel_context.detach(token)
        return
    with tracer.start_as_current_span(
        full_method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=_rpc_attributes(full_method),
        record_exception=False,  # a refusal is an answer, not a failure: ``answered`` says which
        set_status_on_exception=False,
    ) as span:
        yield span


def answered(span: Span | None, code: str, number: int) -> None:
    """The call's gRPC status on its span; an error status only for what the server failed to do."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", number)
    if code in SERVER_FAILURES:
        span.set_status(Status(StatusCode.ERROR, code))


@contextlib.contextmanager
def client_span(full_method: str) -> Iterator[None]:
    """A CLIENT span around a call to a backend; callers ask ``recording()`` first (unsampled: no span)."""
    with tracer.start_as_current_span(full_method, kind=SpanKind.CLIENT, attributes=_rpc_attributes(full_method)):
        yield


@contextlib.contextmanager
def sql_span(sql: str, system: str) -> Iterator[None]:
    """A CLIENT span around one statement a driver runs itself; callers ask ``recording()`` first."""
    operation = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "SQL"
    attributes = {"db.system": system, "db.statement": sql, "db.operation": operation}
    with tracer.start_as_current_span(operation, kind=SpanKind.CLIENT, attributes=attributes):
        yield


def outgoing(items: list[tuple[str, str]]) -> None:
    """Adds the current trace context (``traceparent``) to a call's metadata, when there is one."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        items.extend(carrier.items())


def refused(rules: str) -> None:
    """Marks the current span with a refusal's rule ids (``C2,C9``); callers ask ``recording()`` first."""
    if rules:
        trace.get_current_span().set_attribute(REFUSAL_RULES, rules)


def recording() -> bool:
    """Whether a child span would be recorded: tracing is on and the current span is sampled.

    Children of an unsampled span are not made at all (a parent-based sampler would drop them anyway), so
    tracing 1% of requests costs the other 99% one server span and the ``traceparent`` they pass on.
    """
    return _provider is not None and trace.get_current_span().is_recording()


def _rpc_attributes(full_method: str) -> dict[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _trace_headers(metadata: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in metadata or ():
        if key in (TRACEPARENT, TRACESTATE):
            found[key] = value
    return found
