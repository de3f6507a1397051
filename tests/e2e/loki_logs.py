"""Emits a known set of log records through the OpenTelemetry Python SDK's logs API and its
OTLP/HTTP exporter, for the Loki API's tests: two services, JSON, logfmt and plain lines, a map
body, four severities, records inside two spans of one trace and a line naming another trace,
each at a fixed offset from a base time so that counts over windows are known.

Usage: loki_logs.py ENDPOINT PREFIX BASE_NANOS
Prints `trace=<hex> span1=<hex> span2=<hex> other=<hex>`; exit status 0 when every export
succeeded.
"""

import sys

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from checked import Checked

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN1 = 0x00F067AA0BA902B7
SPAN2 = 0x53995C3F42CD8AD8
OTHER = 0x0AF7651916CD43DD8448EB211C80319C
SECOND = 1_000_000_000


def in_span(span_id: int):
    context = SpanContext(TRACE, span_id, is_remote=False, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(context))


def main(endpoint: str, prefix: str, base: int) -> int:
    exporters = [Checked(http_logs.OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", timeout=10)) for _ in range(2)]
    api = LoggerProvider(
        resource=Resource.create(
            {
                "service.name": f"{prefix}-api",
                "deployment.environment": "e2e",
                "k8s.pod.name": "api-0",
                "host.name": "h1",
            }
        )
    )
    api.add_log_record_processor(SimpleLogRecordProcessor(exporters[0]))
    shop = api.get_logger("shop.api", "2.1")
    info, warn, error, debug = (
        (SeverityNumber.INFO, "INFO"),
        (SeverityNumber.WARN, "WARN"),
        (SeverityNumber.ERROR, "ERROR"),
        (SeverityNumber.DEBUG, "DEBUG"),
    )

    def emit(logger, offset, level, body, context=None, attributes=None):
        logger.emit(
            LogRecord(
                timestamp=base + offset * SECOND,
                observed_timestamp=base + offset * SECOND + 1000,
                context=context,
                severity_number=level[0],
                severity_text=level[1],
                body=body,
                attributes=attributes,
            )
        )

    emit(
        shop,
        1,
        info,
        '{"level":"info","status":200,"path":"/cart","took":"12ms","user":{"id":"u1"}}',
        in_span(SPAN1),
        {"http.method": "GET"},
    )
    emit(shop, 2, warn, 'method=POST status=503 took=1500ms msg="upstream failed"', in_span(SPAN2))
    emit(shop, 3, error, "payment failed for order o-17", in_span(SPAN2), {"order.id": "o-17", "retry": 2, "level": "E"})
    emit(shop, 4, info, f"handled callback for trace {OTHER:032x}")
    emit(shop, 5, info, {"event": "cart.updated", "items": 3})
    emit(shop, 61, error, "payment failed for order o-18", None, {"order.id": "o-18"})
    api.shutdown()

    worker = LoggerProvider(resource=Resource.create({"service.name": f"{prefix}-worker", "deployment.environment": "e2e"}))
    worker.add_log_record_processor(SimpleLogRecordProcessor(exporters[1]))
    jobs = worker.get_logger("worker")
    for n, offset in enumerate([10, 20, 30], start=1):
        emit(jobs, offset, info, f"job done n={n}")
    emit(jobs, 40, debug, "cache warm")
    worker.shutdown()

    print(f"trace={TRACE:032x} span1={SPAN1:016x} span2={SPAN2:016x} other={OTHER:032x}")
    return 1 if any(e.failures for e in exporters) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
