//! The admin endpoints, over real HTTP.

use otelephant::admin::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// GETs `path` and returns the status code and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to admin");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_database() {
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| c.postgres.url = proxy.url()).await;
    let admin = t.server.as_ref().expect("running").admin_addr;
    assert_eq!(get(admin, "/healthz").await.0, 200);
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".into()));

    proxy.cut();
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("database"), "says why: {body}");
    assert_eq!(get(admin, "/healthz").await.0, 200, "alive without the database");
    assert_eq!(get(admin, "/nope").await.0, 404);
    t.stop().await;
}

#[tokio::test]
async fn not_ready_once_shutting_down() {
    let t = TestServer::start().await;
    let health = Health::new(t.server.as_ref().expect("running").pool.clone());
    assert_eq!(health.check().await, Ok(()));
    health.start_shutdown();
    assert_eq!(health.check().await, Err("shutting down".into()));
}
