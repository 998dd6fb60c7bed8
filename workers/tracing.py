"""Install OpenTelemetry's SDK in a process, with the exporter the config names."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from core.config import TracingConfig

_installed: list[TracerProvider] = []


class JsonLinesExporter(SpanExporter):
    """Write finished spans as JSON lines, one file per process (for files and tests)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"spans-{os.getpid()}.jsonl"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append the spans to this process's file."""
        with self.path.open("a") as out:
            for span in spans:
                context = span.get_span_context()
                if context is None:
                    continue
                out.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "trace_id": f"{context.trace_id:032x}",
                            "span_id": f"{context.span_id:016x}",
                            "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                            "attributes": dict(span.attributes or {}),
                            "events": [e.name for e in span.events],
                            "start": span.start_time,
                            "end": span.end_time,
                            "pid": os.getpid(),
                        },
                        default=str,
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def setup(config: TracingConfig) -> TracerProvider | None:
    """Install the SDK provider for this process (once); None when tracing is off."""
    if config.exporter == "none":
        return None
    if _installed:
        return _installed[0]
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    if config.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif config.exporter == "file":
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(Path(config.dir))))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = (
            OTLPSpanExporter(endpoint=config.otlp_endpoint)
            if config.otlp_endpoint
            else OTLPSpanExporter()
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _installed.append(provider)
    return provider


def shutdown() -> None:
    """Flush and stop this process's provider (before the process exits)."""
    for provider in _installed:
        provider.shutdown()
