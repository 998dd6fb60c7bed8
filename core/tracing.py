"""Tracing through the OpenTelemetry API: spans, and the context that joins processes.

Only the API is used here (a no-op until a process installs an SDK provider, see
``workers/tracing.py``). One analysis run is one trace: the run's root span is started where
the run is submitted, its ``traceparent`` travels as a small task argument, and every task
continues it, so all agent tasks are spans of one trace on whichever worker ran them.
Attributes are plain facts (exchange, endpoint, weights, waits, levels); never pass secrets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace

_TRACER = "crypto_ai"
Attr = str | int | float | bool
#: A proxy until a process installs an SDK provider; then it delegates to the real tracer.
_tracer = trace.get_tracer(_TRACER)


def _clean(attributes: dict[str, Any]) -> dict[str, Attr]:
    return {
        k: v if isinstance(v, str | int | float | bool) else str(v)
        for k, v in attributes.items()
        if v is not None
    }


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """Run the block inside a child span of the current one."""
    with _tracer.start_as_current_span(name, attributes=_clean(attributes)) as s:
        yield s


@contextmanager
def continued(parent: str | None, name: str, **attributes: Any) -> Iterator[trace.Span]:
    """Run the block inside a span whose parent is the ``traceparent`` another process sent."""
    context = propagate.extract({"traceparent": parent}) if parent else None
    tracer = trace.get_tracer(_TRACER)
    with tracer.start_as_current_span(name, context=context, attributes=_clean(attributes)) as s:
        yield s


def traceparent() -> str | None:
    """Return the current span's W3C ``traceparent``, to hand to another process."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def set_attributes(**attributes: Any) -> None:
    """Add attributes to the current span (values that are known only at the end)."""
    trace.get_current_span().set_attributes(_clean(attributes))


def add_event(name: str, **attributes: Any) -> None:
    """Record a point-in-time event (a retry, a breaker rejection) on the current span."""
    trace.get_current_span().add_event(name, _clean(attributes))


def current_ids() -> tuple[str, str]:
    """Return the current (trace id, span id) in hex, or empty strings outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
