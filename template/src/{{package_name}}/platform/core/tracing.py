"""OpenTelemetry tracing, off until configured: an HTTP request, the run it queued, the run's graph nodes
and their SQL join in one trace.

On when OTEL_EXPORTER_OTLP_ENDPOINT is set (or TRACING_ENABLED, which exports to the OTLP default,
localhost:4318); spans leave through the OTLP/HTTP exporter, which also reads the standard OTEL_*
variables (headers, timeout, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Off, every tracer is OpenTelemetry's
no-op one and nothing is instrumented.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from psycopg import AsyncConnection

from ...settings import Settings

# Probes and scrapes every few seconds would drown the traces that matter.
EXCLUDED_URLS = "healthz,readyz,metrics"


class Tracing:
    """The service's tracer provider (None: tracing is off) and the spans the platform makes with it."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        self.tracer = (provider or trace.NoOpTracerProvider()).get_tracer(__name__)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def instrument_app(self, app: FastAPI) -> None:
        if self.provider is not None:
            # No spans per ASGI message: a streamed run would make one per event.
            FastAPIInstrumentor.instrument_app(
                app, tracer_provider=self.provider, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"]
            )

    async def instrument_connection(self, conn: AsyncConnection[Any]) -> None:
        """The pool's `configure` hook: this pool's queries become spans, nobody else's connections."""
        PsycopgInstrumentor.instrument_connection(conn, tracer_provider=self.provider)

    @contextmanager
    def run_span(self, run_id: uuid.UUID, thread_id: str, attempt: int, carrier: dict[str, str]) -> Iterator[Span]:
        """The span of one run's execution, a child of the request that queued it (its trace context
        travels with the run through PostgreSQL)."""
        parent = propagate.extract(carrier)
        attributes: dict[str, AttributeValue] = {"thread_id": thread_id, "run_id": str(run_id), "run.attempt": attempt}
        with self.tracer.start_as_current_span("run", context=parent, attributes=attributes) as span:
            yield span

    def callbacks(self, run_id: uuid.UUID, thread_id: str) -> list[BaseCallbackHandler]:
        """LangChain callbacks that make each graph node a span under the current (run) span."""
        if self.provider is None:
            return []
        return [NodeSpans(self.tracer, {"thread_id": thread_id, "run_id": str(run_id)})]

    def shutdown(self) -> None:
        """Export what is still buffered."""
        if self.provider is not None:
            self.provider.shutdown()


def carrier() -> dict[str, str]:
    """The current trace context (W3C traceparent), to store with a queued run; empty when tracing is off."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def tracing_from_settings(settings: Settings) -> Tracing:
    if not (settings.tracing_enabled or settings.otel_exporter_otlp_endpoint):
        return Tracing(None)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    endpoint = settings.otel_exporter_otlp_endpoint
    # Read from .env too, where the exporter (which reads only os.environ) would not see it.
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)


@dataclass
class _NodeRun:
    span: Span
    node: str
    owned: bool


class NodeSpans(BaseCallbackHandler):
    """A span per graph node. LangGraph reports each node, and every runnable inside it, as a chain
    carrying `langgraph_node` metadata: the outermost chain named after its node opens the span, and the
    runnables inside it are remembered only to find their node."""

    # Called on the event loop as LangGraph reports, not in a thread pool: starts and ends stay in order.
    run_inline = True

    def __init__(self, tracer: trace.Tracer, attributes: dict[str, str]) -> None:
        self.tracer = tracer
        self.attributes = attributes
        # Made inside the run's span: nodes without an enclosing node hang from it.
        self.parent = otel_context.get_current()
        self.runs: dict[uuid.UUID, _NodeRun] = {}

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        outer = self.runs.get(parent_run_id) if parent_run_id else None
        node = (metadata or {}).get("langgraph_node")
        if node is not None and kwargs.get("name") == node and (outer is None or outer.node != node):
            context = trace.set_span_in_context(outer.span) if outer else self.parent
            step = (metadata or {}).get("langgraph_step", -1)
            attributes = {**self.attributes, "langgraph.node": node, "langgraph.step": step}
            span = self.tracer.start_span(f"node {node}", context=context, attributes=attributes)
            self.runs[run_id] = _NodeRun(span, node, owned=True)
        elif outer is not None:
            self.runs[run_id] = _NodeRun(outer.span, outer.node, owned=False)

    def on_chain_end(self, outputs: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def _end(self, run_id: uuid.UUID, error: BaseException | None) -> None:
        run = self.runs.pop(run_id, None)
        if run is None or not run.owned:
            return
        if error is not None:
            run.span.record_exception(error)
            run.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        run.span.end()
