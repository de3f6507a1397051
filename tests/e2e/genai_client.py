"""A real LLM application, instrumented, talking to a local stub of the chat completions API.

    python genai_client.py MODE OTLP_HTTP_ENDPOINT SERVICE

MODE picks the instrumentation: `genai` (opentelemetry-instrumentation-openai-v2, its default
output: spans plus per-message log events), `genai-latest` (the same with
OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental and span_and_event capture: messages as
JSON strings on spans and a structured inference event) or `openinference`
(openinference-instrumentation-openai: flattened message attributes). The `openai` client
makes three calls inside an application span: a chat answer, a tool call round trip (the model
asks for get_weather, the tool's result goes back, the model answers) and a streamed answer.
The stub answers canned replies with usage (cached and reasoning tokens included). Prints
`trace_id=<hex>` and exits non-zero when an export failed.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE, ENDPOINT, SERVICE = sys.argv[1], sys.argv[2], sys.argv[3]
CONVERSATION = f"conv-{SERVICE}"
USER = "user-ada"

if MODE == "genai":
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
elif MODE == "genai-latest":
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "span_and_event"

from opentelemetry import _logs, trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402

# The usage every answer reports: what the cost is computed from.
USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1000},
    "completion_tokens_details": {"reasoning_tokens": 100},
}
MODEL = "gpt-4o-mini-2024-07-18"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def completion(message, finish_reason):
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": USAGE,
    }


class Stub(BaseHTTPRequestHandler):
    """Chat completions: a tool call when tools are offered and no tool has answered yet, a
    streamed answer when asked to stream, a plain answer otherwise."""

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        last = request["messages"][-1]
        if request.get("stream"):
            return self.stream()
        if request.get("tools") and last["role"] != "tool":
            call = {"id": "call_weather_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
            body = completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
        elif last["role"] == "tool":
            body = completion({"role": "assistant", "content": f"In Paris it is {json.loads(last['content'])['weather']}."}, "stop")
        else:
            body = completion({"role": "assistant", "content": "Bonjour! How can I help?"}, "stop")
        self.answer(json.dumps(body).encode())

    def answer(self, data):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL}
        pieces = ["Once ", "upon ", "a ", "time."]
        for i, piece in enumerate(pieces):
            delta = {"content": piece, **({"role": "assistant"} if i == 0 else {})}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.05)
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
        usage = {**base, "choices": [], "usage": USAGE}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args):
        pass


class Counting:
    """Wraps an exporter and remembers whether any export failed."""

    def __init__(self, inner):
        self.inner, self.failed = inner, False

    def export(self, batch):
        result = self.inner.export(batch)
        self.failed |= result.name != "SUCCESS"
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    resource = Resource.create({"service.name": SERVICE})
    spans = Counting(OTLPSpanExporter(endpoint=f"{ENDPOINT}/v1/traces"))
    logs = Counting(OTLPLogExporter(endpoint=f"{ENDPOINT}/v1/logs"))
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    trace.set_tracer_provider(tracer_provider)
    _logs.set_logger_provider(logger_provider)

    if MODE == "openinference":
        from openinference.instrumentation import using_attributes
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=tracer_provider)
        scope = using_attributes(session_id=CONVERSATION, user_id=USER)
    else:
        from contextlib import nullcontext

        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=tracer_provider, logger_provider=logger_provider)
        scope = nullcontext()

    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="test-key", max_retries=0)
    tracer = trace.get_tracer("genai-client")
    # The application's own span, as the GenAI conventions describe an agent's: the calls below
    # are its children, and it carries the conversation and the user.
    with scope, tracer.start_as_current_span(
        "invoke_agent weather-agent",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "weather-agent",
            "gen_ai.conversation.id": CONVERSATION,
            "user.id": USER,
        },
    ) as root:
        system = {"role": "system", "content": "You are a terse assistant."}
        client.chat.completions.create(model="gpt-4o-mini", messages=[system, {"role": "user", "content": "Say hello."}])

        question = {"role": "user", "content": "What is the weather in Paris?"}
        first = client.chat.completions.create(model="gpt-4o-mini", messages=[system, question], tools=[WEATHER_TOOL])
        call = first.choices[0].message.tool_calls[0]
        result = {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"weather": "sunny, 21 C"})}
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[system, question, first.choices[0].message.model_dump(exclude_none=True), result],
            tools=[WEATHER_TOOL],
        )

        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Tell me a story."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for _ in stream:
            pass
        trace_id = format(root.get_span_context().trace_id, "032x")

    tracer_provider.shutdown()
    logger_provider.shutdown()
    server.shutdown()
    print(f"trace_id={trace_id}")
    sys.exit(1 if spans.failed or logs.failed else 0)


if __name__ == "__main__":
    main()
