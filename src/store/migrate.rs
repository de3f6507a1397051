//! Schema migrations: the SQL files in `migrations/`, embedded at build time, applied in version
//! order, each in its own transaction under an advisory lock (so replicas starting together take
//! turns), and recorded with a checksum in `schema_migrations` so an edited applied migration is
//! caught instead of silently diverging.

use deadpool_postgres::Object;
use xxhash_rust::xxh3::xxh3_64;

use super::StoreError;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// What `schema_migrations` records of its text.
    #[must_use]
    pub fn checksum(&self) -> i64 {
        xxh3_64(self.sql.as_bytes()) as i64
    }
}

/// Every migration, in version order.
pub const MIGRATIONS: &[Migration] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('otelephant migrate ' || current_schema()))";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   bigint      NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Applies the migrations the database lacks; returns the versions it applied.
///
/// # Errors
/// Database errors, and an applied migration whose text has changed since.
pub async fn run(client: &mut Object) -> Result<Vec<i32>, StoreError> {
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.batch_execute(LOCK).await?;
        tx.batch_execute(CREATE_TABLE).await?;
        let row = tx
            .query_opt("SELECT checksum FROM schema_migrations WHERE version = $1", &[&migration.version])
            .await?;
        match row {
            Some(row) if row.get::<_, i64>(0) == migration.checksum() => {
                tx.rollback().await?;
                continue;
            }
            Some(_) => {
                tx.rollback().await?;
                return Err(StoreError::MigrationChanged {
                    version: migration.version,
                    name: migration.name.to_owned(),
                });
            }
            None => {}
        }
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &migration.checksum()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!("applied migration {} ({})", migration.version, migration.name);
        applied.push(migration.version);
    }
    Ok(applied)
}
