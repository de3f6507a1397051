"""Emits traces, metrics and logs through the OpenTelemetry Python SDK and its OTLP exporters
(gRPC, or HTTP with protobuf), the way an instrumented service would, then flushes and exits.

Usage: sdk_export.py grpc|http ENDPOINT SERVICE_NAME
ENDPOINT is the receiver's base URL (http://host:port). Exit status 0 when every export
succeeded.
"""

import logging
import sys

from opentelemetry.exporter.otlp.proto.grpc import _log_exporter as grpc_logs
from opentelemetry.exporter.otlp.proto.grpc import metric_exporter as grpc_metrics
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_traces
from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
from opentelemetry.exporter.otlp.proto.http import metric_exporter as http_metrics
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.metrics import Observation
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from checked import Checked


def exporters(protocol: str, endpoint: str):
    """Span, log and metric exporters for the protocol."""
    if protocol == "grpc":
        return (
            grpc_traces.OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10),
            grpc_logs.OTLPLogExporter(endpoint=endpoint, insecure=True, timeout=10),
            grpc_metrics.OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=10),
        )
    return (
        http_traces.OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=10),
        http_logs.OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", timeout=10),
        http_metrics.OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=10),
    )


def main(protocol: str, endpoint: str, service: str) -> int:
    resource = Resource.create({"service.name": service, "deployment.environment": "e2e"})
    span_exporter, log_exporter, metric_exporter = exporters(protocol, endpoint)

    spans = Checked(span_exporter)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = tracer_provider.get_tracer("e2e.tracer", "1.0.0")

    with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/checkout/{id}")
        parent.set_attribute("http.status_code", 200)
        parent.set_attribute("ratio", 0.25)
        parent.set_attribute("cached", False)
        parent.set_attribute("tags", ["a", "b", "ü"])
        parent.add_event("cart.loaded", {"items": 3})
        with tracer.start_as_current_span(
            "charge card", kind=SpanKind.CLIENT, links=[Link(parent.get_span_context(), {"link.kind": "follows"})]
        ) as child:
            child.set_status(Status(StatusCode.ERROR, "card declined"))
            child.record_exception(ValueError("declined ✗"))
        trace_id = parent.get_span_context().trace_id

    logs = Checked(log_exporter)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    logger = logging.getLogger("e2e.logger")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
    with tracer.start_as_current_span("log inside span"):
        logger.warning("payment retried %d times", 2, extra={"order.id": "o-17"})
    logger.info("plain info line")

    metrics = Checked(metric_exporter)
    reader = PeriodicExportingMetricReader(metrics, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[reader],
        views=[View(instrument_name="e2e.latency.exp", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = meter_provider.get_meter("e2e.meter", "2.0.0")
    requests = meter.create_counter("e2e.requests", unit="1", description="requests served")
    requests.add(5, {"route": "/a"})
    requests.add(2, {"route": "/b"})
    latency = meter.create_histogram("e2e.latency", unit="ms")
    for v in (1.5, 7.0, 250.0):
        latency.record(v, {"route": "/a"})
    exp = meter.create_histogram("e2e.latency.exp", unit="ms")
    for v in (0.001, 3.0, 1000.0):
        exp.record(v)
    meter.create_observable_gauge("e2e.temperature", callbacks=[lambda _: [Observation(21.5, {"room": "x"})]])
    inflight = meter.create_up_down_counter("e2e.inflight")
    inflight.add(-3)

    meter_provider.shutdown()
    logger_provider.shutdown()
    tracer_provider.shutdown()

    failed = spans.failures + logs.failures + metrics.failures
    print(f"trace_id={trace_id:032x} failures={failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
