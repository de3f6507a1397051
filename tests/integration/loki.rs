//! Loki's query API for Grafana's Loki data source, against log records a real SDK sent
//! (`tests/e2e/sdk_export.py`), with the requests the data source makes
//! (grafana `public/app/plugins/datasource/loki/LanguageProvider.ts`: `fetchLabels` asks
//! `labels?start=&end=` in nanoseconds, `fetchLabelValues` `label/<name>/values?start=&end=`),
//! their answers decoded as strictly as the data source reads them: `status` "success" and
//! `data` a list of strings.

use serde::Deserialize;
use tokio::process::Command;

use crate::common::{
    clients::{e2e_python, repo, url},
    *,
};

/// Loki's answer to a series request: each stream's labels.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Series {
    status: String,
    data: Vec<std::collections::BTreeMap<String, String>>,
}

/// Loki's answer to a labels or values request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Names {
    status: String,
    data: Vec<String>,
}

/// `text` percent-encoded for a query string.
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn get(t: &TestServer, path: &str) -> reqwest::Response {
    reqwest::Client::new().get(url(t, path)).send().await.expect("answered")
}

async fn names(t: &TestServer, path: &str) -> Vec<String> {
    let answer = get(t, path).await;
    assert_eq!(answer.status(), 200, "{path}");
    let names: Names = answer.json().await.expect("Loki's JSON");
    assert_eq!(names.status, "success");
    names.data
}

#[tokio::test]
async fn grafana_lists_the_stream_labels_and_their_values() {
    let python = e2e_python().await;
    let t = TestServer::start().await;
    let service = format!("loki-{}", std::process::id());
    let before = nanos_now();
    let output = Command::new(python)
        .arg(repo().join("tests/e2e/sdk_export.py"))
        .arg("http")
        .arg(format!("http://{}", t.server.as_ref().expect("running").http_addr))
        .arg(&service)
        .output()
        .await
        .expect("run the Python SDK client");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let after = nanos_now() + 1_000_000_000;
    let range = format!("start={before}&end={after}");

    // The SDK's resource carries service.name and deployment.environment, the SDK's own
    // service.instance.id, and telemetry.sdk.*, which Loki does not promote.
    let labels = names(&t, &format!("/loki/api/v1/labels?{range}")).await;
    assert_eq!(labels, ["deployment_environment", "service_instance_id", "service_name"]);
    let instance: String = t
        .sql
        .query_one(
            "SELECT attributes->>'service.instance.id' FROM resources WHERE service_name = $1",
            &[&service],
        )
        .await
        .expect("the resource")
        .get(0);
    assert_eq!(
        names(&t, &format!("/loki/api/v1/label/service_instance_id/values?{range}")).await,
        std::slice::from_ref(&instance)
    );
    assert_eq!(
        names(&t, &format!("/loki/api/v1/label/service_name/values?{range}")).await,
        std::slice::from_ref(&service)
    );

    // The streams a selector matches (fetchSeries: `series?match[]=<selector>&start=&end=`).
    let series = |query: String| {
        let path = format!("/loki/api/v1/series?{range}&{query}");
        let t = &t;
        async move {
            let answer = get(t, &path).await;
            assert_eq!(answer.status(), 200, "{path}");
            let series: Series = answer.json().await.expect("Loki's JSON");
            assert_eq!(series.status, "success");
            series.data
        }
    };
    let stream: std::collections::BTreeMap<String, String> = [
        ("deployment_environment".to_owned(), "e2e".to_owned()),
        ("service_instance_id".to_owned(), instance),
        ("service_name".to_owned(), service.clone()),
    ]
    .into();
    let selector = |s: &str| format!("match[]={}", urlencoding(s));
    assert_eq!(
        series(selector(&format!("{{service_name=\"{service}\"}}"))).await,
        std::slice::from_ref(&stream)
    );
    assert_eq!(
        series(selector("{service_name=~\"loki-.+\", deployment_environment!=\"prod\"}")).await,
        std::slice::from_ref(&stream)
    );
    assert!(series(selector("{service_name=~\"loki\"}")).await.is_empty(), "regexes are anchored");
    assert_eq!(
        series(format!(
            "{}&{}",
            selector("{service_name=\"none\"}"),
            selector("{deployment_environment=\"e2e\"}")
        ))
        .await,
        [stream],
        "any of several selectors"
    );
    for bad in [
        "",
        "match[]=%7Bservice_name%3D%22a%22%7D%20%7C%3D%20%22x%22",
        "match[]=%7Bservice_name%3D~%22(%22%7D",
    ] {
        let answer = get(&t, &format!("/loki/api/v1/series?{range}&{bad}")).await;
        assert_eq!(answer.status(), 400, "{bad}");
    }
    assert_eq!(
        names(&t, &format!("/loki/api/v1/label/deployment_environment/values?{range}")).await,
        ["e2e"]
    );
    assert!(names(&t, &format!("/loki/api/v1/label/k8s_pod_name/values?{range}")).await.is_empty());
    // RFC 3339 times, and the default range (the last six hours).
    let rfc3339 = |nanos: u64| {
        humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
            .to_string()
    };
    assert_eq!(
        names(&t, &format!("/loki/api/v1/labels?start={}&end={}", rfc3339(before), rfc3339(after))).await,
        labels
    );
    assert_eq!(names(&t, "/loki/api/v1/labels").await, labels);
    // A range with no records has no labels.
    assert!(names(
        &t,
        &format!(
            "/loki/api/v1/labels?start={}&end={}",
            before - 7_200_000_000_000,
            before - 3_600_000_000_000
        )
    )
    .await
    .is_empty());

    // A bad time is a 400 naming it; what is not served is a 404, so Grafana falls back.
    let bad = get(&t, "/loki/api/v1/labels?start=yesterday").await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("text").contains("invalid start"));
    assert_eq!(get(&t, "/loki/api/v1/detected_labels?query=%7B%7D").await.status(), 404);
}
