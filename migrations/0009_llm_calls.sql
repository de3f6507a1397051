-- otelephant schema, version 9: LLM calls, one row per span of a model call, tool or agent,
-- read from whichever convention sent it (OpenTelemetry GenAI, OpenInference, OpenLLMetry), so
-- that the LLM views read this narrow table instead of every span's attributes (README.md
-- "LLM calls"). Written by the writers with the spans, in their transaction; the span itself is
-- stored as it was sent. Spans stored before this version have no row here.
CREATE TABLE llm_calls (
    start_time_unix_nano     bigint  NOT NULL,
    end_time_unix_nano       bigint  NOT NULL,
    trace_id                 bytea   NOT NULL,
    span_id                  bytea   NOT NULL,
    resource_id              bigint  NOT NULL,
    -- llm (a model call), embedding, tool, agent, chain, workflow, retriever, reranker,
    -- guardrail, evaluator, prompt or other (src/encode/genai/mod.rs).
    kind                     text    NOT NULL,
    -- As the instrumentation named it: gen_ai.operation.name, openinference.span.kind...
    operation                text,
    -- Lowercase: gen_ai.provider.name, gen_ai.system, llm.provider or llm.system.
    provider                 text,
    request_model            text,
    response_model           text,
    -- Cached and written-to-cache tokens are counted among the input tokens, reasoning tokens
    -- among the output tokens, as the conventions count them.
    input_tokens             bigint,
    output_tokens            bigint,
    total_tokens             bigint,
    cache_read_tokens        bigint,
    cache_write_tokens       bigint,
    reasoning_tokens         bigint,
    -- In USD; NULL when the instrumentation sent none and no price is known for the model.
    cost                     double precision,
    -- 1: the instrumentation's own (llm.cost.total, gen_ai.usage.cost); 2: priced by
    -- otelephant from its price table (price_model names the entry).
    cost_source              integer,
    price_model              text,
    time_to_first_token_nano bigint,
    finish_reason            text,
    -- error.type, else the status message of a span whose status is an error.
    error                    text,
    -- gen_ai.conversation.id, session.id or OpenLLMetry's session association property.
    conversation_id          text,
    user_id                  text,
    agent_name               text,
    tool_name                text
) PARTITION BY RANGE (start_time_unix_nano);
CREATE TABLE llm_calls_default PARTITION OF llm_calls DEFAULT;
-- A btree, not BRIN: the list of calls reads the newest first and stops at its page.
CREATE INDEX llm_calls_time ON llm_calls (start_time_unix_nano);
CREATE INDEX llm_calls_trace ON llm_calls (trace_id);
CREATE INDEX llm_calls_conversation ON llm_calls (conversation_id, start_time_unix_nano)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX llm_calls_user ON llm_calls (user_id, start_time_unix_nano) WHERE user_id IS NOT NULL;

-- For people and Grafana: timestamptz columns, hex ids, service_name, the model a call is
-- grouped by (the response's, else the request's), and where its cost came from. Filter on
-- start_time_unix_nano (Grafana: $__unixEpochNanoFilter) to let PostgreSQL skip partitions.
CREATE VIEW llm_calls_view AS
SELECT otel_ns_to_timestamptz(c.start_time_unix_nano) AS start_time,
       (c.end_time_unix_nano - c.start_time_unix_nano) / 1e6 AS duration_ms,
       c.time_to_first_token_nano / 1e6 AS time_to_first_token_ms,
       r.service_name,
       encode(c.trace_id, 'hex') AS trace_id,
       encode(c.span_id, 'hex') AS span_id,
       c.kind,
       c.operation,
       c.provider,
       coalesce(c.response_model, c.request_model) AS model,
       c.request_model,
       c.response_model,
       c.input_tokens,
       c.output_tokens,
       c.total_tokens,
       c.cache_read_tokens,
       c.cache_write_tokens,
       c.reasoning_tokens,
       c.cost,
       CASE c.cost_source WHEN 1 THEN 'reported' WHEN 2 THEN 'priced' END AS cost_source,
       c.price_model,
       c.finish_reason,
       c.error,
       c.conversation_id,
       c.user_id,
       c.agent_name,
       c.tool_name,
       c.start_time_unix_nano,
       c.end_time_unix_nano
FROM llm_calls c
LEFT JOIN resources r USING (resource_id);
