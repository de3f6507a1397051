//! TLS to PostgreSQL as `sslmode` in `postgres.url` asks, against a private cluster that
//! accepts only TLS connections, with a certificate made for the test.

use std::{path::PathBuf, process::Command};

use otelephant::server::Server;

use crate::common::{
    fixtures::traces,
    pki::{ca, issue},
    postgres::as_postgres,
    *,
};

/// A private PostgreSQL 15 cluster on its own port that takes TLS connections only, stopped
/// and removed on drop.
struct PrivatePg {
    dir: PathBuf,
    port: u16,
}

impl PrivatePg {
    fn start(cert: &str, key: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("otelephant-pgtls-{}", nanos_now()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).expect("dir");
        let chown = |path: &PathBuf| {
            Command::new("chown")
                .args(["-R", "postgres:", &path.display().to_string()])
                .status()
                .expect("chown")
        };
        chown(&dir);
        as_postgres("initdb", &["-D", &data.display().to_string(), "-U", "postgres", "--auth=trust", "-N"]);
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        std::fs::write(data.join("server.crt"), cert).expect("cert");
        std::fs::write(data.join("server.key"), key).expect("key");
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\n\
             fsync = off\nshared_buffers = 16MB\n",
            dir.display()
        );
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).expect("conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("hba");
        chown(&dir);
        Command::new("chmod")
            .args(["600", &data.join("server.key").display().to_string()])
            .status()
            .expect("chmod");
        let log = dir.join("log").display().to_string();
        as_postgres("pg_ctl", &["-D", &data.display().to_string(), "-l", &log, "-w", "start"]);
        Self { dir, port }
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        as_postgres("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts otelephant on `url`, or says why it could not.
async fn start(url: String) -> Result<Server, String> {
    let schema = TestSchema::new();
    let mut config = schema.config();
    config.postgres.url = url;
    Server::start(config).await.map_err(|e| e.to_string())
}

/// Stores four spans through `server` and reads back, on its own pool, how many it holds and
/// whether its connection is encrypted.
async fn store_and_check(server: Server) -> (i64, bool) {
    let endpoint = format!("http://{}", server.grpc_addr);
    let mut client =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            endpoint,
        )
        .await
        .expect("connect");
    client.export(traces::request(nanos_now())).await.expect("stored");
    let db = server.pool.get().await.expect("connection");
    let spans: i64 = db.query_one("SELECT count(*) FROM spans", &[]).await.expect("count").get(0);
    let ssl: bool = db
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .expect("pg_stat_ssl")
        .get(0);
    drop(db);
    server.shutdown().await.expect("clean shutdown");
    (spans, ssl)
}

#[tokio::test]
async fn sslmode_is_honoured() {
    let (trusted, untrusted) = (ca("database CA"), ca("another CA"));
    // Named for localhost only, so verify-full against 127.0.0.1 must fail.
    let server_cert = issue(&trusted, &["localhost"]);
    let pg = PrivatePg::start(&server_cert.cert, &server_cert.key);
    let ca_file = pg.dir.join("ca.pem");
    std::fs::write(&ca_file, trusted.pem()).expect("ca");
    let other_ca = pg.dir.join("other-ca.pem");
    std::fs::write(&other_ca, untrusted.pem()).expect("ca");
    let url =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{}/otelephant_tls?{query}", pg.port);
    let (ca, other) = (ca_file.display(), other_ca.display());

    let refused = start(url("127.0.0.1", "sslmode=disable")).await.err().expect("plain text is refused");
    assert!(refused.contains("no encryption") || refused.contains("pg_hba"), "{refused}");

    for query in ["sslmode=require", "sslmode=prefer", &format!("sslmode=verify-ca&sslrootcert={ca}")] {
        let server = start(url("127.0.0.1", query)).await.unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(store_and_check(server).await, (4, true), "{query}");
    }
    let server =
        start(url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"))).await.expect("verify-full");
    assert_eq!(store_and_check(server).await, (4, true));

    let wrong_name = start(url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"))).await;
    assert!(wrong_name.is_err(), "the certificate does not name 127.0.0.1");
    let wrong_ca = start(url("localhost", &format!("sslmode=verify-ca&sslrootcert={other}"))).await;
    assert!(wrong_ca.is_err(), "a certificate from a CA not given");
    let no_root = start(url("localhost", "sslmode=verify-full")).await.err().expect("needs sslrootcert");
    assert!(no_root.contains("sslrootcert"), "{no_root}");
}
