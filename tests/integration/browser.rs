//! The web UI in a real browser: Debian's chromium driven by playwright-core
//! (`tests/browser/ui.mjs`), after the OpenTelemetry Python SDK has sent real OTLP
//! (`tests/e2e/ui_data.py`). `tests/browser/setup.sh` installs both on first use. Screenshots
//! of every screen are written to `target/browser-screenshots/`, with the render time of a
//! 5,000-span trace in `target/browser-screenshots/ui/render.txt`.

use std::path::PathBuf;

use otelephant::auth::Secret;
use tokio::process::Command;

use crate::common::{
    clients::{e2e_python, repo},
    *,
};

/// The browser's path, after making sure it and playwright-core are installed.
async fn browser() -> String {
    let output = Command::new(repo().join("tests/browser/setup.sh")).output().await.expect("run setup.sh");
    assert!(
        output.status.success(),
        "setting up the browser tests failed (needs Debian's chromium and npm):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 path").trim().to_owned()
}

fn screenshots(run: &str) -> PathBuf {
    repo().join("target/browser-screenshots").join(run)
}

/// Runs `tests/browser/ui.mjs` against the server with `env`; its output, checked to pass.
async fn run_browser(t: &TestServer, env: &[(&str, String)]) -> String {
    let chromium = browser().await;
    let mut command = Command::new("node");
    command
        .arg(repo().join("tests/browser/ui.mjs"))
        .current_dir(repo().join("tests/browser"))
        .env("BASE_URL", format!("http://{}", t.server.as_ref().expect("running").http_addr))
        .env("CHROMIUM", chromium);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), command.output())
        .await
        .expect("the browser run finishes within 5 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the browser checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_finds_services_traces_logs_and_metrics_in_the_web_ui() {
    let mut t = TestServer::start().await;
    let python = e2e_python().await;
    let endpoint = format!("http://{}", t.server.as_ref().expect("running").http_addr);
    let sent = Command::new(&python)
        .arg(repo().join("tests/e2e/ui_data.py"))
        .arg(&endpoint)
        .output()
        .await
        .expect("run ui_data.py");
    assert!(sent.status.success(), "the SDK's exports failed:\n{}", String::from_utf8_lossy(&sent.stderr));
    let mut data: serde_json::Value = serde_json::from_slice(&sent.stdout).expect("ui_data.py prints JSON");
    // The calls between services, as the server's own pass pairs them once their minute closes.
    t.rollup_pass().await;
    data["sql"] = raw_figures(&t, data["trace_id"].as_str().expect("the checkout trace")).await;
    let data = data.to_string();
    let shots = screenshots("ui");
    let output = run_browser(&t, &[("DATA", data), ("SHOTS", shots.display().to_string())]).await;
    print!("{output}");
    // The render time of the 5,000-span trace is printed for the record, not asserted.
    assert!(output.contains("RENDER 5000 spans"), "{output}");
    println!("screenshots in {}", shots.display());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_reads_llm_costs_and_conversations_in_the_web_ui() {
    let mut t = TestServer::start().await;
    let python = e2e_python().await;
    let endpoint = format!("http://{}", t.server.as_ref().expect("running").http_addr);
    let pid = std::process::id();
    let (genai, openinference) = (format!("chat-genai-{pid}"), format!("chat-openinference-{pid}"));
    for (mode, service) in [("genai", &genai), ("openinference", &openinference)] {
        let sent = Command::new(&python)
            .arg(repo().join("tests/e2e/genai_client.py"))
            .args([mode, &endpoint, service])
            .output()
            .await
            .expect("run genai_client.py");
        assert!(sent.status.success(), "the client failed:\n{}", String::from_utf8_lossy(&sent.stderr));
    }
    // What the pages must show, from SQL over the stored rows: model calls only.
    let totals = t
        .sql
        .query_one(
            "SELECT count(*), sum(input_tokens)::bigint, sum(output_tokens)::bigint FROM llm_calls
             WHERE kind IN ('llm', 'embedding')",
            &[],
        )
        .await
        .expect("totals");
    let groups: Vec<serde_json::Value> = t
        .sql
        .query(
            "SELECT coalesce(c.response_model, c.request_model), r.service_name, count(*), sum(c.cost)
             FROM llm_calls c JOIN resources r USING (resource_id) WHERE c.kind IN ('llm', 'embedding')
             GROUP BY 1, 2",
            &[],
        )
        .await
        .expect("groups")
        .iter()
        .map(|r| {
            serde_json::json!({"model": r.get::<_, String>(0), "service": r.get::<_, String>(1),
                               "calls": r.get::<_, i64>(2), "cost": r.get::<_, f64>(3)})
        })
        .collect();
    // Per user: the model calls of the traces in which a span carries the user's id.
    let users: Vec<serde_json::Value> = t
        .sql
        .query(
            "SELECT o.user_id, count(*), sum(c.cost)
             FROM (SELECT DISTINCT user_id, trace_id FROM llm_calls WHERE user_id IS NOT NULL) o
             JOIN llm_calls c USING (trace_id) WHERE c.kind IN ('llm', 'embedding') GROUP BY 1",
            &[],
        )
        .await
        .expect("users")
        .iter()
        .map(|r| serde_json::json!({"user": r.get::<_, String>(0), "calls": r.get::<_, i64>(1), "cost": r.get::<_, f64>(2)}))
        .collect();
    assert!(!users.is_empty(), "the instrumented application names its user");
    let call_cost: f64 = t
        .sql
        .query_one(
            "SELECT max(c.cost) FROM llm_calls c JOIN resources r USING (resource_id)
             WHERE r.service_name = $1 AND c.kind = 'llm'",
            &[&genai],
        )
        .await
        .expect("a call's cost")
        .get(0);
    let mut conversation_costs = serde_json::Map::new();
    for service in [&genai, &openinference] {
        let cost: f64 = t
            .sql
            .query_one(
                "SELECT sum(c.cost) FROM llm_calls c JOIN resources r USING (resource_id)
                 WHERE r.service_name = $1 AND c.kind = 'llm'",
                &[service],
            )
            .await
            .expect("a conversation's cost")
            .get(0);
        conversation_costs.insert(format!("conv-{service}"), otelephant::ui::cost_text(cost).into());
    }
    let data = serde_json::json!({
        "genai_service": genai,
        "openinference_conversation": format!("conv-{openinference}"),
        "sql": {
            "calls": totals.get::<_, i64>(0),
            "input": totals.get::<_, i64>(1),
            "output": totals.get::<_, i64>(2),
            "groups": groups,
            "users": users,
            "call_cost_text": otelephant::ui::cost_text(call_cost),
            "conversation_cost_texts": conversation_costs,
        }
    });
    let shots = screenshots("llm");
    let output = run_browser(
        &t,
        &[("MODE", "llm".into()), ("DATA", data.to_string()), ("SHOTS", shots.display().to_string())],
    )
    .await;
    print!("{output}");
    println!("screenshots in {}", shots.display());
    t.stop().await;
}

/// The figures the pages must show, from SQL over the stored rows rather than from the rollups
/// or the query service.
async fn raw_figures(t: &TestServer, checkout_trace: &str) -> serde_json::Value {
    // The busiest minute of frontend's requests (server and consumer spans).
    let busiest: i64 = t
        .sql
        .query_one(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM spans s JOIN resources r USING (resource_id)
             WHERE r.service_name = 'frontend' AND s.kind IN (2, 5)
             GROUP BY s.start_time_unix_nano / 60000000000) m",
            &[],
        )
        .await
        .expect("busiest minute")
        .get(0);
    // Calls between services: child spans whose parent is another service's, per pair, with
    // how many failed and the p95 of their durations.
    let edges: Vec<serde_json::Value> = t
        .sql
        .query(
            "SELECT rp.service_name || ' -> ' || rc.service_name, count(*), count(*) FILTER (WHERE c.status_code = 2),
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY c.end_time_unix_nano - c.start_time_unix_nano)
             FROM spans c JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
             JOIN resources rc ON rc.resource_id = c.resource_id JOIN resources rp ON rp.resource_id = p.resource_id
             WHERE rp.service_name <> rc.service_name GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("edges")
        .iter()
        .map(|r| serde_json::json!([r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, i64>(2), r.get::<_, i64>(3)]))
        .collect();
    // Calls to what sends no spans: client and producer spans naming a database, queue or host
    // (as ui_data.py names them) with no child in another service, per caller and peer.
    let leaves: Vec<serde_json::Value> = t
        .sql
        .query(
            "SELECT r.service_name,
                    CASE WHEN s.attributes ? 'db.system' THEN 'database' WHEN s.attributes ? 'messaging.system' THEN 'messaging'
                         ELSE 'remote' END,
                    CASE WHEN s.attributes ? 'db.system' THEN concat_ws(' ', s.attributes ->> 'db.system', s.attributes ->> 'db.namespace')
                         WHEN s.attributes ? 'messaging.system'
                         THEN concat_ws(' ', s.attributes ->> 'messaging.system', s.attributes ->> 'messaging.destination.name')
                         ELSE s.attributes ->> 'server.address' END,
                    count(*), count(*) FILTER (WHERE s.status_code = 2),
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY s.end_time_unix_nano - s.start_time_unix_nano)
             FROM spans s JOIN resources r USING (resource_id)
             WHERE s.kind IN (3, 4) AND s.attributes ?| ARRAY['db.system', 'messaging.system', 'server.address']
               AND NOT EXISTS (SELECT 1 FROM spans c JOIN resources rc ON rc.resource_id = c.resource_id
                               WHERE c.trace_id = s.trace_id AND c.parent_span_id = s.span_id
                                 AND rc.service_name <> r.service_name)
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .expect("leaves")
        .iter()
        .map(|r| {
            serde_json::json!([
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, i64>(3),
                r.get::<_, i64>(4),
                r.get::<_, i64>(5)
            ])
        })
        .collect();
    let checkout_root: i64 = t
        .sql
        .query_one(
            "SELECT end_time_unix_nano - start_time_unix_nano FROM spans
             WHERE trace_id = decode($1, 'hex') AND parent_span_id IS NULL",
            &[&checkout_trace],
        )
        .await
        .expect("the checkout trace's root")
        .get(0);
    let poller_requests: i64 = t
        .sql
        .query_one(
            "SELECT count(*) FROM spans s JOIN resources r USING (resource_id) WHERE r.service_name = 'poller'",
            &[],
        )
        .await
        .expect("the poller's requests")
        .get(0);
    // frontend's requests, as the scatter plot draws them: its root, server and consumer spans.
    let frontend_requests: i64 = t
        .sql
        .query_one(
            "SELECT count(*) FROM spans s JOIN resources r USING (resource_id)
             WHERE r.service_name = 'frontend' AND (s.kind IN (2, 5) OR s.parent_span_id IS NULL)",
            &[],
        )
        .await
        .expect("frontend's requests")
        .get(0);
    // Log records per severity range, by the range's name.
    let severities: serde_json::Map<String, serde_json::Value> = t
        .sql
        .query(
            "SELECT (ARRAY['UNSET', 'TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'])[
                        CASE WHEN severity_number < 1 THEN 1 WHEN severity_number > 24 THEN 7
                             ELSE (severity_number - 1) / 4 + 2 END], count(*)
             FROM logs GROUP BY 1",
            &[],
        )
        .await
        .expect("severities")
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).into()))
        .collect();
    let order_records: i64 = t
        .sql
        .query_one("SELECT count(*) FROM logs WHERE attributes ->> 'order.id' = 'o-17'", &[])
        .await
        .expect("records of order o-17")
        .get(0);
    // The lowest and highest share of frontend's requests that failed in one minute, in percent.
    let error_extent = t
        .sql
        .query_one(
            "SELECT min(p)::float8, max(p)::float8 FROM (
                 SELECT count(*) FILTER (WHERE s.status_code = 2) * 100.0 / count(*) AS p
                 FROM spans s JOIN resources r USING (resource_id)
                 WHERE r.service_name = 'frontend' AND s.kind IN (2, 5)
                 GROUP BY s.start_time_unix_nano / 60000000000) m",
            &[],
        )
        .await
        .expect("error rate per minute");
    // Every log record, newest first by its own time (its observed time when it has none).
    let log_times: Vec<String> = t
        .sql
        .query("SELECT timestamp_unix_nano FROM logs ORDER BY timestamp_unix_nano DESC", &[])
        .await
        .expect("log times")
        .iter()
        .map(|r| r.get::<_, i64>(0).to_string())
        .collect();
    // The HTTP duration histogram's first point: the later ones repeat it (cumulative).
    let slow = t
        .sql
        .query_one(
            "SELECT p.explicit_bounds, p.bucket_counts, p.min, p.max FROM metric_points_histogram p
             JOIN metric_series s USING (series_id) WHERE s.metric_name = 'http.server.request.duration'
             ORDER BY p.time_unix_nano LIMIT 1",
            &[],
        )
        .await
        .expect("the HTTP duration histogram");
    // Each checkout span's time outside its children. No span of that trace has children that
    // overlap each other, so their durations (clipped to the parent) simply add up.
    let self_times: serde_json::Map<String, serde_json::Value> = t
        .sql
        .query(
            "SELECT encode(s.span_id, 'hex'), (s.end_time_unix_nano - s.start_time_unix_nano)
                 - coalesce(sum(least(c.end_time_unix_nano, s.end_time_unix_nano)
                                - greatest(c.start_time_unix_nano, s.start_time_unix_nano))
                               FILTER (WHERE c.span_id IS NOT NULL), 0)::bigint
             FROM spans s LEFT JOIN spans c ON c.trace_id = s.trace_id AND c.parent_span_id = s.span_id
             WHERE s.trace_id = decode($1, 'hex')
             GROUP BY s.span_id, s.start_time_unix_nano, s.end_time_unix_nano",
            &[&checkout_trace],
        )
        .await
        .expect("self times")
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).to_string().into()))
        .collect();
    let health_records: i64 = t
        .sql
        .query_one("SELECT count(*) FROM logs WHERE lower(body #>> '{}') LIKE '%health%'", &[])
        .await
        .expect("records about health")
        .get(0);
    // The payments service's spans per name and kind, and how many failed.
    let operations: Vec<serde_json::Value> = t
        .sql
        .query(
            "SELECT s.name, s.kind, count(*), count(*) FILTER (WHERE s.status_code = 2)
             FROM spans s JOIN resources r USING (resource_id) WHERE r.service_name = 'payments'
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("payments' operations")
        .iter()
        .map(|r| {
            serde_json::json!([
                r.get::<_, String>(0),
                r.get::<_, i32>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3)
            ])
        })
        .collect();
    serde_json::json!({
        "payments_operations": operations,
        "health_records": health_records,
        "self_times": self_times,
        "busiest_minute_requests": busiest,
        "log_severities": severities,
        "edges": edges,
        "leaves": leaves,
        "frontend_requests": frontend_requests,
        "poller_requests": poller_requests,
        "checkout_root_nanos": checkout_root,
        "order_records": order_records,
        "frontend_error_percent": [error_extent.get::<_, f64>(0), error_extent.get::<_, f64>(1)],
        "log_times": log_times,
        "slow_bounds": slow.get::<_, Vec<f64>>(0),
        "slow_counts": slow.get::<_, Vec<i64>>(1),
        "slow_min": slow.get::<_, Option<f64>>(2),
        "slow_max": slow.get::<_, Option<f64>>(3),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_asks_for_the_query_token_and_works_once_given() {
    let mut t = TestServer::start_with(|c| c.auth.query_token = Some(Secret("ui-token-51c8".into()))).await;
    let shots = screenshots("token");
    let env = [
        ("MODE", "token".to_owned()),
        ("QUERY_TOKEN", "ui-token-51c8".to_owned()),
        ("SHOTS", shots.display().to_string()),
    ];
    print!("{}", run_browser(&t, &env).await);
    t.stop().await;
}

#[tokio::test]
async fn the_web_ui_can_be_turned_off() {
    let mut t = TestServer::start_with(|c| c.ui.enabled = false).await;
    let base = format!("http://{}", t.server.as_ref().expect("running").http_addr);
    let page = reqwest::get(format!("{base}/")).await.expect("answered");
    assert_eq!(page.status(), reqwest::StatusCode::NOT_FOUND);
    let api = reqwest::Client::new()
        .post(format!("{base}/otelephant.query.v1.QueryService/ListServices"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(api.status(), reqwest::StatusCode::OK, "the JSON API stays");
    t.stop().await;
}
