//! Bearer tokens: ingest and query guarded separately, on both receivers, with tokens from the
//! configuration and from a file; secrets kept out of the logs.

use otelephant::{auth::Secret, query::proto::ListServicesRequest};
use tonic::{metadata::MetadataValue, Code, Request};

use crate::common::{fixtures::traces, *};

const INGEST: &str = "ingest-token-7f3a9c";
const QUERY: &str = "query-token-b61e02";
const QUERY_ROTATED: &str = "query-token-next-44d1";

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("metadata value");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

async fn guarded() -> (TestServer, tempfile_path::TempFile) {
    let file = tempfile_path::TempFile::new(&format!("{QUERY}\n\n{QUERY_ROTATED}\n"));
    let path = file.path.clone();
    let t = TestServer::start_with(|c| {
        c.auth.ingest_token = Some(Secret(INGEST.into()));
        c.auth.query_token_file = Some(path);
    })
    .await;
    (t, file)
}

/// A file that is removed when dropped.
mod tempfile_path {
    pub struct TempFile {
        pub path: std::path::PathBuf,
    }

    impl TempFile {
        pub fn new(contents: &str) -> Self {
            let path = std::env::temp_dir().join(format!("otelephant-tokens-{}", crate::common::nanos_now()));
            std::fs::write(&path, contents).expect("write token file");
            Self { path }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[tokio::test]
async fn grpc_export_and_query_each_need_their_own_token() {
    let (mut t, _file) = guarded().await;
    let server = &t;
    let export = |token| async move {
        let mut client = server.traces().await;
        // Ten seconds ago, inside the query service's default range (the last hour).
        client
            .export(with_token(traces::request(nanos_now() - 10_000_000_000), token))
            .await
            .map(|_| ())
            .map_err(|s| s.code())
    };
    assert_eq!(export(None).await, Err(Code::Unauthenticated), "no token");
    assert_eq!(export(Some("wrong")).await, Err(Code::Unauthenticated), "a wrong token");
    assert_eq!(export(Some(QUERY)).await, Err(Code::Unauthenticated), "a reading token cannot write");
    assert_eq!(t.count("spans").await, 0);
    assert_eq!(export(Some(INGEST)).await, Ok(()));
    assert_eq!(t.count("spans").await, 4);

    let list = |token| async move {
        let mut client =
            otelephant::query::proto::query_service_client::QueryServiceClient::connect(server.endpoint())
                .await
                .expect("connect");
        client.list_services(with_token(ListServicesRequest::default(), token)).await.map(|r| r.into_inner())
    };
    assert_eq!(list(None).await.map_err(|s| s.code()), Err(Code::Unauthenticated));
    assert_eq!(
        list(Some(INGEST)).await.map_err(|s| s.code()),
        Err(Code::Unauthenticated),
        "writing is not reading"
    );
    let services = list(Some(QUERY)).await.expect("the query token reads");
    assert_eq!(services.services, vec!["checkout".to_owned()]);
    list(Some(QUERY_ROTATED)).await.expect("every token in the file is accepted");

    // Health stays open for load balancers and orchestrators.
    let channel = tonic::transport::Channel::from_shared(t.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("open");
    t.stop().await;
}

#[tokio::test]
async fn http_export_needs_the_ingest_token() {
    use prost::Message;
    let (mut t, _file) = guarded().await;
    let url = format!("http://{}/v1/traces", t.server.as_ref().expect("running").http_addr);
    let body = traces::request(nanos_now()).encode_to_vec();
    let client = reqwest::Client::new();
    let send = |token: Option<&'static str>| {
        let mut request =
            client.post(&url).header("content-type", "application/x-protobuf").body(body.clone());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send()
    };
    for token in [None, Some("wrong"), Some(QUERY)] {
        let answer = send(token).await.expect("answered");
        assert_eq!(answer.status(), 401, "{token:?}");
        assert_eq!(answer.headers()["www-authenticate"], "Bearer");
        let status = otelephant::receive::http::RpcStatus::decode(answer.bytes().await.expect("body"))
            .expect("a google.rpc.Status");
        assert_eq!(status.code, 16, "UNAUTHENTICATED");
    }
    assert_eq!(t.count("spans").await, 0);
    assert_eq!(send(Some(INGEST)).await.expect("answered").status(), 200);
    assert_eq!(t.count("spans").await, 4);
    t.stop().await;
}

#[tokio::test]
async fn unreadable_or_empty_token_files_stop_the_start() {
    let schema = TestSchema::new();
    let mut config = schema.config();
    config.auth.ingest_token_file = Some("/nonexistent/otelephant-tokens".into());
    let err = otelephant::server::Server::start(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("/nonexistent/otelephant-tokens"), "{err}");
    let empty = tempfile_path::TempFile::new("\n  \n");
    config.auth.ingest_token_file = Some(empty.path.clone());
    let err = otelephant::server::Server::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("holds no token"), "{err}");
}
