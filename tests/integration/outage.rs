//! Database outages: ingest waits out a short one and resumes by itself, with no restart.

use crate::common::*;

#[tokio::test]
async fn ingest_rides_out_an_outage_and_resumes_by_itself() {
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| {
        c.postgres.url = proxy.url();
        c.pipeline.retry_deadline_ms = 30_000;
    })
    .await;
    t.traces().await.export(crate::traces::request(nanos_now())).await.expect("stored before the outage");

    // The database goes away: connections drop, new ones are refused.
    proxy.refuse();
    let mut client = t.traces().await;
    let waiting = tokio::spawn(async move { client.export(crate::traces::request(nanos_now())).await });
    // The writer has tried and failed to reach the database (at least twice: it retries).
    proxy.refused_at_least(2).await;
    assert!(!waiting.is_finished(), "the request waits instead of failing at once");

    // The database comes back; the waiting request is stored and answered with success.
    proxy.heal();
    waiting.await.expect("task").expect("stored after the outage");
    assert_eq!(t.count("spans").await, 8);
    t.stop().await;
}
