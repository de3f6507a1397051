//! The storage layer against a real PostgreSQL: the COPY encoder, the column lists against the
//! live tables, migrations, and partitions.

use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
};
use otelephant::{
    encode::{
        attributes::write_str,
        copy::{Rows, Table},
        TABLES,
    },
    store::{self, migrate, partitions, writer, StoreError},
};

use crate::common::*;

const ALL_TYPES: Table = Table {
    name: "copy_probe",
    columns: &["i8", "i4", "f8", "b", "t", "by", "j", "ai8", "af8"],
    kind: otelephant::encode::copy::TableKind::Dimension,
};

#[tokio::test]
async fn copy_encoder_round_trips_every_type_null_empty_and_large() {
    let schema = TestSchema::new();
    let config = schema.config();
    let pool = store::connect(&config.postgres).await.expect("pool");
    let mut client = pool.get().await.expect("client");
    client
        .batch_execute(
            "CREATE TABLE copy_probe (i8 bigint, i4 integer, f8 double precision, b boolean, t text,
                                      by bytea, j jsonb, ai8 bigint[], af8 double precision[])",
        )
        .await
        .expect("create");

    let large_text = "ü".repeat(600_000);
    let large_bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut rows = Rows::default();
    {
        let mut row = rows.row(&ALL_TYPES);
        row.int8(i64::MIN);
        row.int4(i32::MAX);
        row.float8(f64::NEG_INFINITY);
        row.bool(true);
        row.text("tab\there ✓");
        row.bytea(&[0, 1, 255]);
        row.jsonb(|buf| write_str(buf, "json ✓"));
        row.int8_array([1i64, -2, i64::MAX].into_iter());
        row.float8_array([0.5, f64::NAN].into_iter());
    }
    {
        let mut row = rows.row(&ALL_TYPES);
        for _ in 0..ALL_TYPES.columns.len() {
            row.null();
        }
    }
    {
        let mut row = rows.row(&ALL_TYPES);
        row.int8(0);
        row.int4(0);
        row.float8(-0.0);
        row.bool(false);
        row.text("");
        row.bytea(&[]);
        row.jsonb_text(b"{}");
        row.int8_array(std::iter::empty());
        row.float8_array(std::iter::empty());
    }
    {
        let mut row = rows.row(&ALL_TYPES);
        row.int8(1);
        row.null();
        row.null();
        row.null();
        row.text(&large_text);
        row.bytea(&large_bytes);
        row.jsonb(|buf| {
            let attributes = every_value_attributes();
            otelephant::encode::attributes::write_attributes(buf, &attributes[..]).expect("decoded");
        });
        row.int8_array((0..100_000i64).collect::<Vec<_>>().into_iter());
        row.null();
    }
    // Split the stream into two chunks to check tuples concatenate.
    let bytes = rows.buf.freeze();
    let tx = client.transaction().await.expect("tx");
    let copied =
        writer::copy(&tx, &ALL_TYPES.copy_statement("copy_probe"), &[&bytes.slice(..), &Bytes::new()])
            .await
            .expect("copy");
    tx.commit().await.expect("commit");
    assert_eq!(copied, 4);

    let got = client.query("SELECT * FROM copy_probe ORDER BY i8 NULLS LAST", &[]).await.expect("select");
    assert_eq!(got.len(), 4);
    let first = &got[0];
    assert_eq!(first.get::<_, Option<i64>>("i8"), Some(i64::MIN));
    assert_eq!(first.get::<_, Option<i32>>("i4"), Some(i32::MAX));
    assert_eq!(first.get::<_, Option<f64>>("f8"), Some(f64::NEG_INFINITY));
    assert_eq!(first.get::<_, Option<bool>>("b"), Some(true));
    assert_eq!(first.get::<_, Option<String>>("t").as_deref(), Some("tab\there ✓"));
    assert_eq!(first.get::<_, Option<Vec<u8>>>("by"), Some(vec![0, 1, 255]));
    assert_eq!(first.get::<_, Option<serde_json::Value>>("j"), Some(serde_json::json!("json ✓")));
    assert_eq!(first.get::<_, Option<Vec<i64>>>("ai8"), Some(vec![1, -2, i64::MAX]));
    let floats: Vec<f64> = first.get("af8");
    assert_eq!(floats[0], 0.5);
    assert!(floats[1].is_nan());

    let empty = &got[1];
    assert_eq!(empty.get::<_, Option<i64>>("i8"), Some(0));
    assert_eq!(empty.get::<_, Option<f64>>("f8").map(f64::to_bits), Some((-0.0f64).to_bits()));
    assert_eq!(empty.get::<_, Option<String>>("t").as_deref(), Some(""));
    assert_eq!(empty.get::<_, Option<Vec<u8>>>("by"), Some(vec![]));
    assert_eq!(empty.get::<_, Option<serde_json::Value>>("j"), Some(serde_json::json!({})));
    assert_eq!(empty.get::<_, Option<Vec<i64>>>("ai8"), Some(vec![]));
    assert_eq!(empty.get::<_, Option<Vec<f64>>>("af8"), Some(vec![]));

    let large = &got[2];
    assert_eq!(large.get::<_, Option<String>>("t"), Some(large_text));
    assert_eq!(large.get::<_, Option<Vec<u8>>>("by"), Some(large_bytes));
    assert_eq!(large.get::<_, Vec<i64>>("ai8").len(), 100_000);
    assert_eq!(normalize(&attributes(&large.get("j"))), normalize(&every_value_attributes()));
    assert_eq!(large.get::<_, Option<f64>>("f8"), None);

    let nulls = &got[3];
    for column in ALL_TYPES.columns {
        let is_null: bool = client
            .query_one(&format!("SELECT {column} IS NULL FROM copy_probe WHERE i8 IS NULL"), &[])
            .await
            .expect("null check")
            .get(0);
        assert!(is_null, "{column} should be NULL");
    }
    assert_eq!(nulls.get::<_, Option<String>>("t"), None);
    drop(client);
    pool.close();
}

#[tokio::test]
async fn column_lists_match_the_live_tables() {
    let t = TestServer::start().await;
    for table in TABLES {
        let live: Vec<(String, bool)> = t
            .sql
            .query(
                "SELECT column_name::text, (is_nullable = 'NO' AND column_default IS NULL AND is_generated = 'NEVER')
                 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[&table.name],
            )
            .await
            .expect("columns")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert!(!live.is_empty(), "table {} exists", table.name);
        for column in table.columns {
            assert!(live.iter().any(|(name, _)| name == column), "{}.{column} exists", table.name);
        }
        for (name, required) in &live {
            assert!(
                !required || table.columns.contains(&name.as_str()),
                "required {}.{name} is encoded",
                table.name
            );
        }
        // The encoder writes the columns in the table's own order, so a reader of the COPY
        // statement and of the table sees the same layout.
        let positions: Vec<usize> = table
            .columns
            .iter()
            .map(|c| live.iter().position(|(name, _)| name == c).expect("present"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{} columns are in table order", table.name);
    }
}

#[tokio::test]
async fn migrations_are_idempotent_concurrent_and_guarded() {
    let schema = TestSchema::new();
    let config = schema.config();
    let pool = store::connect(&config.postgres).await.expect("pool");
    // Several replicas starting at once: exactly one applies each migration.
    let runs = (0..3).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move { migrate::run(&mut pool.get().await.expect("client")).await })
    });
    let mut applied = Vec::new();
    for run in runs {
        applied.extend(run.await.expect("task").expect("migrates"));
    }
    applied.sort();
    let expected: Vec<i32> = migrate::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, expected);

    let mut client = pool.get().await.expect("client");
    assert!(migrate::run(&mut client).await.expect("again").is_empty());

    client
        .batch_execute("UPDATE schema_migrations SET checksum = checksum + 1 WHERE version = 1")
        .await
        .expect("tamper");
    let err = migrate::run(&mut client).await.expect_err("edited migration");
    assert!(matches!(err, StoreError::MigrationChanged { version: 1, .. }), "{err}");
    drop(client);
    pool.close();
}

/// Version 7 replaced version 6's pairing bookkeeping (minutes due, children waiting for their
/// parent) with candidates: what version 6 had left to pair is paired afresh.
#[tokio::test]
async fn an_upgrade_pairs_again_what_version_6_had_left_to_pair() {
    let schema = TestSchema::new();
    let config = schema.config();
    let pool = store::connect(&config.postgres).await.expect("pool");
    let mut client = pool.get().await.expect("client");
    // The database as version 6 left it.
    let tx = client.transaction().await.expect("tx");
    tx.batch_execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, checksum bigint NOT NULL,
                                         applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .expect("migrations table");
    for migration in migrate::MIGRATIONS.iter().filter(|m| m.version <= 6) {
        tx.batch_execute(migration.sql).await.expect("older migration");
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &migration.checksum()],
        )
        .await
        .expect("recorded");
    }
    tx.commit().await.expect("version 6");
    // web calls api in a due minute (with a stale edge row), and api calls db in a minute
    // paired already (whose edge stays); the child of a waiting orphan's minute is paired again.
    let minute: i64 = 1_700_000_040 * 1_000_000_000;
    let (due, paired, waiting) = (minute, minute + 60_000_000_000, minute + 120_000_000_000);
    client
        .batch_execute(&format!(
            "INSERT INTO resources (resource_id, attributes, dropped_attributes_count, schema_url) VALUES
                 (1, '{{\"service.name\": \"web\"}}', 0, ''), (2, '{{\"service.name\": \"api\"}}', 0, ''),
                 (3, '{{\"service.name\": \"db\"}}', 0, '');
             INSERT INTO spans (start_time_unix_nano, end_time_unix_nano, trace_id, span_id, parent_span_id,
                                trace_state, flags, name, kind, resource_id, scope_id, attributes,
                                dropped_attributes_count, dropped_events_count, dropped_links_count,
                                status_code, status_message)
             SELECT s, s + d, '\\x01010101010101010101010101010101', id, parent, '', 0, 'op', kind, resource, 0,
                    '{{}}', 0, 0, 0, code, ''
             FROM (VALUES ({due}::bigint, 30000000::bigint, '\\x0000000000000001'::bytea, NULL::bytea, 3, 1, NULL::integer),
                          ({due} + 1000, 20000000, '\\x0000000000000002', '\\x0000000000000001', 2, 2, 2),
                          ({paired}, 5000000, '\\x0000000000000003', '\\x0000000000000002', 2, 3, NULL),
                          ({waiting}, 7000000, '\\x0000000000000004', '\\x0000000000000002', 0, 3, NULL))
                 AS v (s, d, id, parent, kind, resource, code);
             INSERT INTO pairing_due VALUES ({due});
             INSERT INTO pairing_orphans VALUES ({waiting}, '\\x01', '\\x02', 0, 0);
             INSERT INTO service_edges VALUES ({due}, 'web', 'api', 7, 0, ''), ({paired}, 'api', 'db', 1, 0, ''),
                                              ({waiting}, 'api', 'db', 9, 0, '');"
        ))
        .await
        .expect("version 6's state");

    assert_eq!(migrate::run(&mut client).await.expect("upgrades"), [7, 8, 9, 10, 11]);
    let candidates: Vec<(i64, i32, i64)> = client
        .query("SELECT minute_unix_nano, status_code, duration_nanos FROM pairing_candidates ORDER BY 1", &[])
        .await
        .expect("candidates")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(candidates, [(due, 2, 20_000_000), (waiting, 0, 7_000_000)]);
    let edges: Vec<(i64, i64)> = client
        .query("SELECT minute_unix_nano, calls FROM service_edges ORDER BY 1", &[])
        .await
        .expect("edges")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(edges, [(paired, 1)], "the minutes to pair again lost their old counts");
    for table in ["pairing_due", "pairing_orphans"] {
        let gone: bool =
            client.query_one("SELECT to_regclass($1) IS NULL", &[&table]).await.expect("lookup").get(0);
        assert!(gone, "{table} dropped");
    }

    // The next pass counts them.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let report = otelephant::store::rollups::run_pass(&pool, &config.rollups, later, false)
        .await
        .expect("pass")
        .expect("not skipped");
    assert_eq!((report.paired, report.waiting), (2, 0), "{report:?}");
    let edges: Vec<(i64, String, String, i64, i64)> = client
        .query(
            "SELECT minute_unix_nano, parent_service, child_service, sum(calls)::bigint, sum(errors)::bigint
             FROM service_edges GROUP BY 1, 2, 3 ORDER BY 1",
            &[],
        )
        .await
        .expect("edges")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect();
    let edge = |minute, parent: &str, child: &str, calls, errors| {
        (minute, parent.into(), child.into(), calls, errors)
    };
    assert_eq!(
        edges,
        [edge(due, "web", "api", 1, 1), edge(paired, "api", "db", 1, 0), edge(waiting, "api", "db", 1, 0)]
    );
    drop(client);
    pool.close();
}

fn log_at(time: u64) -> LogRecord {
    LogRecord { time_unix_nano: time, body: None, severity_text: "late".into(), ..Default::default() }
}

#[tokio::test]
async fn records_outside_prepared_days_are_stored_and_moved_into_new_partitions() {
    let mut t = TestServer::start().await;
    const DAY: u64 = 86_400_000_000_000;
    let now = nanos_now();
    let today = (now / DAY) as i32;
    let far_future = now + 40 * DAY;
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![log_at(0), log_at(now - 30 * DAY), log_at(far_future), log_at(u64::MAX)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.logs().await.export(request).await.expect("out-of-range records are accepted");
    // time 0 falls back to the observed time (also 0), then to the time it was received.
    let in_default: i64 =
        t.sql.query_one("SELECT count(*) FROM logs_default", &[]).await.expect("count").get(0);
    assert_eq!(in_default, 3, "late, future and u64::MAX land in the default partition");
    assert_eq!(t.count("logs").await, 4);

    // Time moves on: the day of the future record gets its partition, and the record moves in.
    let future_day = (far_future / DAY) as i32;
    let pool = t.server.as_ref().expect("running").pool.clone();
    let mut client = pool.get().await.expect("client");
    let config = otelephant::config::PartitionConfig { days_ahead: 0, days_behind: 0, ..Default::default() };
    let created = partitions::ensure(&mut client, future_day, &config).await.expect("creates partitions");
    assert_eq!(created, partitions::PARTITIONED.len());
    let name: String = t
        .sql
        .query_one("SELECT to_char(date '1970-01-01' + $1::integer, 'YYYYMMDD')", &[&future_day])
        .await
        .expect("day name")
        .get(0);
    let partition = format!("logs_p{name}");
    let moved: i64 =
        t.sql.query_one(&format!("SELECT count(*) FROM {partition}"), &[]).await.expect("count").get(0);
    assert_eq!(moved, 1);
    assert_eq!(t.count("logs_default").await, 2);
    // Large jsonb values are lz4-compressed in every partition, however it was made.
    let compression: Vec<(String, String)> = t
        .sql
        .query(
            "SELECT attrelid::regclass::text, attcompression::text FROM pg_attribute \
             WHERE attname = 'body' AND attrelid IN ('logs'::regclass, $1::text::regclass, \
                   ('logs_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD'))::regclass) ORDER BY 1",
            &[&partition],
        )
        .await
        .expect("compression")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert!(compression.len() == 3 && compression.iter().all(|(_, c)| c == "l"), "{compression:?}");
    assert_eq!(t.count("logs").await, 4, "nothing lost while moving");
    // Running again creates nothing; today's partitions existed from start-up.
    assert_eq!(partitions::ensure(&mut client, future_day, &config).await.expect("idempotent"), 0);
    assert_eq!(partitions::ensure(&mut client, today, &config).await.expect("today exists"), 0);
    drop(client);
    t.stop().await;
}
