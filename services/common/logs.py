"""JSON logs on stdout, one object a line, with the request id of the call."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import uuid
from datetime import UTC, datetime

from opentelemetry import trace

from services.common.validation import ID_PATTERN

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# Who a call acts for (the gateway's principal), carried to the backends for the audit trail.
actor_var: contextvars.ContextVar[str] = contextvars.ContextVar("actor", default="")


def request_id_or_new(offered: str) -> str:
    """The caller's request id when it is a well-formed id (at most 64 id characters), else a new one:
    a caller's value is logged and repeated in the answer, so it is bounded like every other (D2)."""
    return offered if ID_PATTERN.match(offered) else uuid.uuid4().hex


def current_ids() -> tuple[str, str]:
    """The current trace and span ids in hex (the caller's, when this process makes no spans); empty if none."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return "", ""
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        trace_id, span_id = current_ids()
        if trace_id:
            entry["trace_id"], entry["span_id"] = trace_id, span_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-statement SQL and per-call gRPC chatter stay out of the service log.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
