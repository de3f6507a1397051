//! Database outages: ingest waits out a short one and resumes by itself, with no restart, and a
//! connection cut in the middle of a COPY costs nothing: the batch is written again, once.

use crate::common::*;

#[tokio::test]
async fn ingest_rides_out_an_outage_and_resumes_by_itself() {
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| {
        c.postgres.url = proxy.url();
        c.pipeline.retry_deadline_ms = 30_000;
    })
    .await;
    t.traces()
        .await
        .export(crate::common::fixtures::traces::request(nanos_now()))
        .await
        .expect("stored before the outage");

    // The database goes away: connections drop, new ones are refused.
    proxy.refuse();
    let mut client = t.traces().await;
    let waiting =
        tokio::spawn(
            async move { client.export(crate::common::fixtures::traces::request(nanos_now())).await },
        );
    // The writer has tried and failed to reach the database (at least twice: it retries).
    proxy.refused_at_least(2).await;
    assert!(!waiting.is_finished(), "the request waits instead of failing at once");

    // The database comes back; the waiting request is stored and answered with success.
    proxy.heal();
    waiting.await.expect("task").expect("stored after the outage");
    assert_eq!(t.count("spans").await, 8);
    t.stop().await;
}

#[tokio::test]
async fn a_connection_cut_in_the_middle_of_a_copy_loses_and_duplicates_nothing() {
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| {
        c.postgres.url = proxy.url();
        c.pipeline.retry_deadline_ms = 30_000;
    })
    .await;
    let mut traces = t.traces().await;
    traces
        .export(crate::common::fixtures::traces::request(nanos_now()))
        .await
        .expect("stored before the cut");

    // A request of 2,000 spans: its spans travel in one CopyData message of a megabyte or so,
    // and the connection is cut half-way through it, inside the open transaction.
    let mut request = crate::common::fixtures::traces::request(nanos_now());
    request.resource_spans.truncate(1);
    request.resource_spans[0].scope_spans.truncate(1);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    let template = spans.clone();
    spans.clear();
    for i in 0..2000u32 {
        let mut span = template[i as usize % template.len()].clone();
        span.span_id = [[0xcc; 4], i.to_be_bytes()].concat();
        spans.push(span);
    }
    proxy.cut_mid_copy(256 * 1024);
    traces.export(request).await.expect("stored after the writer reconnects and writes the batch again");
    assert!(proxy.copy_was_cut(), "the connection was cut in the middle of a COPY");

    // The cut transaction left nothing behind; the retried one stored every span once.
    let stored = t
        .sql
        .query_one("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans", &[])
        .await
        .expect("count");
    let (rows, distinct): (i64, i64) = (stored.get(0), stored.get(1));
    assert_eq!(rows, 4 + 2000);
    assert_eq!(distinct, rows, "no span was stored twice");
    t.stop().await;
}
