"""OpenTelemetry set-up: spans are always recorded so trace context can travel in event headers; they are
exported only when ``otel_exporter`` asks for it."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from syntropism.config import Settings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("syntropism")


def _exporter(kind: str) -> SpanExporter | None:
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        try:  # imported by name: an optional extra, which a type check need not have installed
            otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        except ImportError as exc:
            raise RuntimeError("otel_exporter=otlp needs the OTLP exporter: pip install 'syntropism[otlp]'") from exc
        exporter: SpanExporter = otlp.OTLPSpanExporter()
        return exporter
    return None


def setup_tracing(settings: Settings) -> TracerProvider:
    """Install the global tracer provider once per process; later calls return the installed one."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    exporter = _exporter(settings.otel_exporter)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("exporting traces with the %s exporter", settings.otel_exporter)
    trace.set_tracer_provider(provider)
    return provider


def trace_headers() -> dict[str, str]:
    """The current trace context as message headers (W3C ``traceparent``/``tracestate``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from_headers(headers: Mapping[str, str]) -> Context:
    """The trace context a consumer continues from a message's headers."""
    return propagate.extract(dict(headers))
