"""Sends what the web UI's browser test looks at, through the OpenTelemetry Python SDK and its
OTLP/HTTP exporters, as instrumented services would:
- a `frontend` trace calling `payments` (an error with an exception event and a structured
  log), and a span whose parent was never sent;
- `payments` calling PostgreSQL, Kafka and a payment provider, none of which sends spans;
- log records inside and outside spans, one with a map body;
- log records whose time and observed time differ;
- a counter over two routes, a histogram and a gauge, each exported several times, and an
  HTTP duration histogram whose slowest requests are beyond its top bucket bound;
- a trace of 5,000 spans, to time the timeline with;
- 1,500 requests of a poller, more than the scatter plot shows.

Usage: ui_data.py ENDPOINT  (the OTLP/HTTP base URL, http://host:port)
Prints one JSON object: the trace ids and span names the test looks for. Exit status 0 when
every export succeeded.
"""

import json
import logging
import math
import random
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
from opentelemetry.exporter.otlp.proto.http import metric_exporter as http_metrics
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from checked import Checked

# The HTTP semantic conventions' advice for http.server.request.duration, in seconds.
HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]


def provider(endpoint, service, checked):
    exporter = Checked(http_traces.OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=30))
    checked.append(exporter)
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": service, "host.name": f"{service}-1"}))
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def main(endpoint: str) -> int:
    checked = []
    frontend = provider(endpoint, "frontend", checked)
    payments = provider(endpoint, "payments", checked)
    front = frontend.get_tracer("shop.frontend", "3.1.0")
    pay = payments.get_tracer("shop.payments", "0.9.2")

    log_exporter = Checked(http_logs.OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", timeout=30))
    checked.append(log_exporter)
    logger_provider = LoggerProvider(resource=Resource.create({"service.name": "payments"}))
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    logger = logging.getLogger("shop.payments")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider))

    with front.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/checkout")
        root.set_attribute("http.response.status_code", 502)
        root.set_attribute("cart.items", ["book", "lamp", "tea ☕"])
        root.add_event("cart.loaded", {"items": 3})
        time.sleep(0.01)
        with front.start_as_current_span("POST /charge", kind=SpanKind.CLIENT) as call:
            call.set_attribute("server.address", "payments")
            with pay.start_as_current_span("charge", kind=SpanKind.SERVER) as charge:
                charge.set_attribute("payment.amount", 42.5)
                charge.set_attribute("payment.currency", "EUR")
                charge.set_attribute("payment.retried", True)
                time.sleep(0.02)
                with pay.start_as_current_span("SELECT accounts", kind=SpanKind.CLIENT) as db:
                    db.set_attribute("db.system", "postgresql")
                    db.set_attribute("db.namespace", "shop")
                    time.sleep(0.005)
                logger.warning("card declined for order %s", "o-17", extra={"order.id": "o-17"})
                try:
                    raise ValueError("card declined")
                except ValueError as err:
                    charge.record_exception(err)
                charge.set_status(Status(StatusCode.ERROR, "card declined"))
            call.set_status(Status(StatusCode.ERROR))
        root.set_status(Status(StatusCode.ERROR, "payment failed"))
        trace_id = root.get_span_context().trace_id
        charge_id = charge.get_span_context().span_id
    # What payments calls that sends no spans of its own, for the service map's leaves: a
    # settlement job publishing to Kafka and calling a payment provider, which refuses.
    with pay.start_as_current_span("settlement job", kind=SpanKind.INTERNAL):
        with pay.start_as_current_span("payment-events publish", kind=SpanKind.PRODUCER) as publish:
            publish.set_attribute("messaging.system", "kafka")
            publish.set_attribute("messaging.destination.name", "payment-events")
            time.sleep(0.002)
        with pay.start_as_current_span("POST /v1/refunds", kind=SpanKind.CLIENT) as refund:
            refund.set_attribute("server.address", "api.stripe.example")
            time.sleep(0.012)
            refund.set_status(Status(StatusCode.ERROR))
    # A structured body, as the logs API (not the logging module) sends it.
    from opentelemetry._logs import SeverityNumber

    logger_provider.get_logger("shop.payments.audit").emit(
        timestamp=time.time_ns(),
        context=trace.set_span_in_context(charge),
        severity_number=SeverityNumber.ERROR,
        severity_text="ERROR",
        body={"event": "payment.failed", "order": {"id": "o-17", "amount": 42.5}, "codes": [51, 5]},
        attributes={"order.id": "o-17"},
    )
    logger.info("health check ok")
    # Two records listed by their own time, not by when they were observed: one delivered
    # 30 s late (observed now) and, later in its own time, one observed as it happened.
    audit = logger_provider.get_logger("shop.payments.audit")
    now = time.time_ns()
    audit.emit(timestamp=now - 40_000_000_000, observed_timestamp=now, severity_number=SeverityNumber.INFO,
               body="settlement batch delivered late")
    audit.emit(timestamp=now - 10_000_000_000, observed_timestamp=now - 10_000_000_000,
               severity_number=SeverityNumber.INFO, body="settlement batch on time")

    # A span whose parent was never sent.
    lost_parent = SpanContext(trace_id=random.getrandbits(128), span_id=random.getrandbits(64), is_remote=True,
                              trace_flags=TraceFlags(1))
    ctx = trace.set_span_in_context(NonRecordingSpan(lost_parent))
    # It links to the checkout trace (stored) and to a trace that was never sent.
    elsewhere = SpanContext(trace_id=random.getrandbits(128), span_id=random.getrandbits(64), is_remote=True)
    links = [Link(root.get_span_context(), {"link.reason": "retry of"}), Link(elsewhere)]
    with front.start_as_current_span("orphan work", context=ctx, kind=SpanKind.INTERNAL, links=links) as orphan:
        orphan.set_attribute("note", "parent not stored")
    orphan_trace = orphan.get_span_context().trace_id

    metric_exporter = Checked(http_metrics.OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=30))
    checked.append(metric_exporter)
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meters = MeterProvider(resource=Resource.create({"service.name": "frontend"}), metric_readers=[reader])
    meter = meters.get_meter("shop.frontend", "3.1.0")
    orders = meter.create_counter("shop.orders", unit="{order}", description="orders placed")
    latency = meter.create_histogram("shop.request.duration", unit="ms", description="request latency")
    # HTTP's duration buckets end at 10 s: 23 of these 59 requests took longer.
    http_duration = meter.create_histogram(
        "http.server.request.duration", unit="s", description="Duration of HTTP server requests.",
        explicit_bucket_boundaries_advisory=HTTP_BUCKETS,
    )
    slow = [8 + 2 * i / 35 for i in range(36)] + [10.5 + 11.5 * j / 22 for j in range(23)]
    for v in slow:
        http_duration.record(v, {"http.route": "/slow"})
    temperature = [20.0]
    meter.create_observable_gauge(
        "shop.temperature", unit="Cel", callbacks=[lambda _: [metrics_observation(temperature[0])]]
    )
    metrics_from = time.time_ns() // 1_000_000 - 2_000
    for i in range(6):
        orders.add(3 + i, {"route": "/a"})
        orders.add(1, {"route": "/b"})
        for v in (5 + i, 12, 40, 80 + 10 * i, 300):
            latency.record(v, {"route": "/a"})
        temperature[0] = 20.0 + i / 2
        reader.force_flush()
        time.sleep(1.1)
    metrics_to = time.time_ns() // 1_000_000 + 2_000

    # 5,000 spans in one trace: a root, a preparation, and 49 jobs of 101 items each.
    big = TracerProvider(resource=Resource.create({"service.name": "batch"}))
    big_exporter = Checked(http_traces.OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=60))
    checked.append(big_exporter)
    big.add_span_processor(BatchSpanProcessor(big_exporter, max_queue_size=10_000, max_export_batch_size=1_000))
    tracer = big.get_tracer("shop.batch")
    count = 0
    with tracer.start_as_current_span("nightly batch", kind=SpanKind.SERVER) as batch_root:
        count += 1
        with tracer.start_as_current_span("prepare"):
            count += 1
        for i in range(49):
            with tracer.start_as_current_span(f"job {i}") as job:
                count += 1
                for j in range(101):
                    with tracer.start_as_current_span(f"item {i}.{j}", attributes={"item": j}):
                        count += 1
                job.set_attribute("items", 101)
        big_trace = batch_root.get_span_context().trace_id
    big.shutdown()

    # 1,500 requests of a poller in a burst: more than the scatter plot shows, so it samples.
    poller = TracerProvider(resource=Resource.create({"service.name": "poller"}))
    poller_exporter = Checked(http_traces.OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=60))
    checked.append(poller_exporter)
    poller.add_span_processor(BatchSpanProcessor(poller_exporter, max_queue_size=2_000, max_export_batch_size=500))
    poll = poller.get_tracer("shop.poller")
    started = time.time_ns()
    for i in range(1_500):
        at = started + i * 1_000_000
        poll.start_span("GET /poll", kind=SpanKind.SERVER, start_time=at).end(end_time=at + (1 + i % 37) * 100_000)
    poller.shutdown()

    for p in (frontend, payments):
        p.shutdown()
    meters.shutdown()
    logger_provider.shutdown()
    failures = sum(c.failures for c in checked)
    print(json.dumps({
        "trace_id": f"{trace_id:032x}",
        "charge_span": f"{charge_id:016x}",
        "orphan_trace": f"{orphan_trace:032x}",
        "unstored_trace": f"{elsewhere.trace_id:032x}",
        "big_trace": f"{big_trace:032x}",
        "big_spans": count,
        "metrics_from": metrics_from,
        # As percentile_disc picks them: the value at rank ceil(q n) of the sorted durations.
        "slow_p95": sorted(slow)[math.ceil(0.95 * len(slow)) - 1],
        "slow_p99": sorted(slow)[math.ceil(0.99 * len(slow)) - 1],
        "metrics_to": metrics_to,
        "failures": failures,
    }))
    return 1 if failures else 0


def metrics_observation(value):
    from opentelemetry.metrics import Observation

    return Observation(value, {"room": "server"})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
