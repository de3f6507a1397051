//! TLS on the gRPC and OTLP/HTTP listeners, with and without client certificates, against
//! certificates made for the test.

use std::path::PathBuf;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::common::{
    fixtures::traces,
    pki::{ca, issue, Pem},
    *,
};

/// A CA, a server certificate it signed (for 127.0.0.1), a client certificate it signed, and a
/// client certificate from a CA nobody trusts; written to a directory removed on drop.
struct Pki {
    dir: PathBuf,
    ca: String,
    client: Pem,
    stranger: Pem,
}

impl Pki {
    fn new() -> Self {
        let (trusted, untrusted) = (ca("otelephant test CA"), ca("someone else's CA"));
        let server = issue(&trusted, &["127.0.0.1", "localhost"]);
        let dir = std::env::temp_dir().join(format!("otelephant-tls-{}", nanos_now()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("server.pem"), &server.cert).expect("write");
        std::fs::write(dir.join("server.key"), &server.key).expect("write");
        std::fs::write(dir.join("ca.pem"), trusted.pem()).expect("write");
        Self {
            ca: trusted.pem(),
            client: issue(&trusted, &["client.example"]),
            stranger: issue(&untrusted, &["stranger.example"]),
            dir,
        }
    }

    async fn server(&self, mutual: bool) -> TestServer {
        let dir = self.dir.clone();
        TestServer::start_with(|c| {
            c.tls.cert_file = Some(dir.join("server.pem"));
            c.tls.key_file = Some(dir.join("server.key"));
            c.tls.client_ca_file = mutual.then(|| dir.join("ca.pem"));
        })
        .await
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Exports four spans over gRPC with `tls` (None: plain text); Err says what failed.
async fn grpc_export(t: &TestServer, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let addr = t.server.as_ref().expect("running").grpc_addr;
    let endpoint = match tls {
        Some(tls) => {
            Channel::from_shared(format!("https://{addr}")).expect("uri").tls_config(tls).expect("tls")
        }
        None => Channel::from_shared(format!("http://{addr}")).expect("uri"),
    };
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    TraceServiceClient::new(channel)
        .export(traces::request(nanos_now()))
        .await
        .map(|_| ())
        .map_err(|e| format!("export: {e:?}"))
}

/// Posts four spans over OTLP/HTTP through `client`; Err says what failed.
async fn http_export(t: &TestServer, client: reqwest::Client) -> Result<(), String> {
    let addr = t.server.as_ref().expect("running").http_addr;
    let answer = client
        .post(format!("https://{addr}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(traces::request(nanos_now()).encode_to_vec())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    if answer.status() == 200 {
        Ok(())
    } else {
        Err(format!("status {}", answer.status()))
    }
}

fn http_client(ca: Option<&str>, identity: Option<&Pem>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false);
    if let Some(ca) = ca {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"));
    }
    if let Some(pem) = identity {
        let both = format!("{}{}", pem.cert, pem.key);
        builder = builder.identity(reqwest::Identity::from_pem(both.as_bytes()).expect("identity"));
    }
    builder.build().expect("client")
}

fn grpc_tls(ca: Option<&str>, identity: Option<&Pem>) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = ca {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some(pem) = identity {
        tls = tls.identity(Identity::from_pem(&pem.cert, &pem.key));
    }
    tls
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_no_one_else() {
    let pki = Pki::new();
    let mut t = pki.server(false).await;
    let ca = Some(pki.ca.as_str());

    grpc_export(&t, Some(grpc_tls(ca, None))).await.expect("gRPC over TLS");
    http_export(&t, http_client(ca, None)).await.expect("HTTP over TLS");
    assert_eq!(t.count("spans").await, 8);

    assert!(grpc_export(&t, Some(grpc_tls(None, None))).await.is_err(), "a client without the CA");
    assert!(grpc_export(&t, None).await.is_err(), "plain text");
    assert!(http_export(&t, http_client(None, None)).await.is_err(), "a client without the CA");
    let plain = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", t.server.as_ref().expect("running").http_addr))
        .header("content-type", "application/x-protobuf")
        .body(traces::request(nanos_now()).encode_to_vec())
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|a| a.status() != 200), "plain text");
    assert_eq!(t.count("spans").await, 8, "nothing else got in");
    // Browsers are told to come back only over TLS.
    let addr = t.server.as_ref().expect("running").http_addr;
    let page = http_client(ca, None).get(format!("https://{addr}/")).send().await.expect("the UI over TLS");
    assert_eq!(page.headers()["strict-transport-security"], "max-age=31536000");
    t.stop().await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let mut t = pki.server(true).await;
    let ca = Some(pki.ca.as_str());

    grpc_export(&t, Some(grpc_tls(ca, Some(&pki.client)))).await.expect("gRPC with a client certificate");
    http_export(&t, http_client(ca, Some(&pki.client))).await.expect("HTTP with a client certificate");
    assert_eq!(t.count("spans").await, 8);

    assert!(grpc_export(&t, Some(grpc_tls(ca, None))).await.is_err(), "gRPC without a client certificate");
    assert!(
        grpc_export(&t, Some(grpc_tls(ca, Some(&pki.stranger)))).await.is_err(),
        "gRPC, untrusted certificate"
    );
    assert!(http_export(&t, http_client(ca, None)).await.is_err(), "HTTP without a client certificate");
    assert!(
        http_export(&t, http_client(ca, Some(&pki.stranger))).await.is_err(),
        "HTTP, untrusted certificate"
    );
    assert_eq!(t.count("spans").await, 8, "nothing else got in");
    t.stop().await;
}

#[tokio::test]
async fn a_key_that_does_not_match_its_certificate_stops_the_start() {
    let pki = Pki::new();
    std::fs::write(pki.dir.join("other.key"), rcgen::KeyPair::generate().expect("key").serialize_pem())
        .expect("write");
    let schema = TestSchema::new();
    let mut config = schema.config();
    config.tls.cert_file = Some(pki.dir.join("server.pem"));
    config.tls.key_file = Some(pki.dir.join("other.key"));
    let err = otelephant::server::Server::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("TLS"), "{err}");
}
