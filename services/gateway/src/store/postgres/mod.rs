//! The PostgreSQL engine (`--store postgres://…`): images, vectors, thumbnails and meetings
//! in one database, so that any number of gateway replicas serve the same data and the
//! gateway itself keeps no state.
//!
//! Why PostgreSQL with pgvector: it is what Immich keeps its CLIP vectors in, every cloud
//! offers it managed, and it replicates, backs up and restores with standard tools. The
//! schema is in `migrations/` and is applied at start under an advisory lock (or ahead of a
//! rollout with `mmc db migrate`).
//!
//! - Vectors are `vector(N)` columns, typed when the embedding space is recorded with the
//!   first image, with one HNSW index (inner product on the sum of an image's two vectors;
//!   `m` = [`HNSW_M`], `ef_construction` = [`HNSW_EF_CONSTRUCTION`]). See [`images`] for
//!   why that one index ranks by the fused score.
//! - Records are `jsonb`; metadata filters are jsonb containment, pushed into SQL.
//! - Content-hash idempotency is a unique constraint, not a check in the gateway.
//! - Connection failures map to [`StoreError::Unavailable`] (gRPC `UNAVAILABLE`); the pool
//!   tests a connection before lending it and opens new ones as needed, so the gateway
//!   recovers by itself when the database is back.

pub mod codes;
pub mod images;
pub mod meetings;
pub mod removals;
pub mod thumbnails;

use std::{sync::Arc, time::Duration};

use sqlx::{
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    SqlSafeStr as _,
};

use super::{SearchIndex, StoreError, Stores};

pub use images::PostgresImages;
pub use meetings::PostgresMeetings;
pub use thumbnails::PostgresThumbnails;

/// HNSW graph degree and build breadth, above pgvector's defaults (16, 64), as in the
/// embedded store's graph (see `store/embedded/ann.rs` for the measurements behind them).
pub const HNSW_M: u32 = 32;
pub const HNSW_EF_CONSTRUCTION: u32 = 128;

/// Connections per gateway by default (`--store-pool-size`): each in-flight store call
/// holds one for its duration (milliseconds), so a handful serve hundreds of requests per
/// second. Size it so that replicas x pool stays under the server's `max_connections`
/// (100 by default; managed offers vary), less what other clients need.
pub const POOL_CONNECTIONS: u32 = 16;
/// How long a store call waits for a connection before it is UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, oldest first. Never edit an applied migration: add the next one.
fn migrator() -> Migrator {
    let migration = |version, description: &'static str, sql: &'static str| {
        Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), false)
    };
    let mut migrator = Migrator::with_migrations(vec![
        migration(1, "schema", include_str!("migrations/0001_schema.sql")),
        migration(2, "changes", include_str!("migrations/0002_changes.sql")),
        migration(3, "removal times", include_str!("migrations/0003_removal_times.sql")),
    ]);
    // Our own bookkeeping table: a database shared with another sqlx application keeps
    // both histories apart.
    migrator.dangerous_set_table_name("mmc_schema_migrations");
    migrator
}

/// Opens the stores in the database at `url` (libpq URL syntax; `sslmode=require` and
/// `sslrootcert=…` for TLS), applying migrations first. Waits up to `wait` for the database
/// to come up (a gateway and its database started together). `pool_size`: connections this
/// process opens at most; `index`: how searches find their candidates; `removal_retention`:
/// when set, this process prunes the change log's older removals, now and every hour
/// ([`removals`]; a gateway does, tools do not).
pub async fn open_waiting(
    url: &str,
    wait: Duration,
    pool_size: u32,
    index: SearchIndex,
    removal_retention: Option<Duration>,
) -> Result<Stores, StoreError> {
    let pool = connect_with(url, pool_size)?;
    let started = std::time::Instant::now();
    loop {
        match migrate(&pool).await {
            Ok(()) => break,
            Err(StoreError::Unavailable(_)) if started.elapsed() < wait => {
                tracing::warn!(store = %redact(url), "the database is not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
    // Pruned before the scan codes (if any) start loading, so that their snapshot already
    // counts the pruned horizon and the first search does not sweep them for nothing.
    if let Some(retention) = removal_retention {
        removals::prune_logged(&pool, retention).await;
        tokio::spawn(removals::prune_periodically(pool.clone(), retention));
    }
    let images = PostgresImages::new(pool.clone(), index);
    // An interrupted bulk load (`mmc db copy`) left the rows without their index.
    if images.build_index_if_missing().await? {
        tracing::warn!(store = %redact(url), "the images' search index was missing (an interrupted copy?) and is built again");
    }
    tracing::info!(store = %redact(url), "PostgreSQL store opened");
    Ok(Stores {
        images: Arc::new(images),
        meetings: Arc::new(PostgresMeetings::new(pool.clone())),
        thumbnails: Arc::new(PostgresThumbnails::new(pool)),
    })
}

/// [`open_waiting`] without waiting.
pub async fn open(url: &str, index: SearchIndex) -> Result<Stores, StoreError> {
    open_waiting(url, Duration::ZERO, POOL_CONNECTIONS, index, None).await
}

/// A pool of [`POOL_CONNECTIONS`] for `url`; connects lazily (the first call opens the
/// first connection).
pub fn connect(url: &str) -> Result<PgPool, StoreError> {
    connect_with(url, POOL_CONNECTIONS)
}

/// [`connect`] with at most `pool_size` connections (at least one).
pub fn connect_with(url: &str, pool_size: u32) -> Result<PgPool, StoreError> {
    // The parser's message may quote the URL, password included: say only what is wrong.
    let options: PgConnectOptions = url.parse().map_err(|_| StoreError::Engine(format!("{} is not a PostgreSQL URL", redact(url))))?;
    Ok(PgPoolOptions::new()
        .max_connections(pool_size.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A connection that died with a database restart is found and replaced here, not
        // handed to a request.
        .test_before_acquire(true)
        .connect_lazy_with(options.application_name("mmc-gateway")))
}

/// Applies every migration not yet applied (under an advisory lock: concurrent gateways
/// wait for each other). Refuses a database whose history this version does not know.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    migrator().run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => pg(e),
        e => StoreError::Engine(format!("migrating the database schema: {e}")),
    })
}

/// Maps a driver error: connection trouble is [`StoreError::Unavailable`] (retry later),
/// text PostgreSQL cannot hold is [`StoreError::Unstorable`], the rest is an engine fault.
/// The cause is logged here; clients see only the short message.
pub(crate) fn pg(e: sqlx::Error) -> StoreError {
    let unavailable = match &e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08: connection exception; 57P01-03: shut down / cannot connect now;
            // 53300: too many connections.
            if matches!(code.as_ref(), "22P05" | "22021") {
                return StoreError::Unstorable;
            }
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }
        _ => false,
    };
    if unavailable {
        tracing::warn!("PostgreSQL store unavailable: {e}");
        metrics::counter!("mmc_gateway_store_unavailable_total").increment(1);
        StoreError::Unavailable("database")
    } else {
        StoreError::Engine(format!("PostgreSQL: {e}"))
    }
}

/// `url` without its password, for logs and messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
    .split("password=")
    .next()
    .unwrap_or_default()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redact("postgres://mmc:s3cret@db:5432/mmc?sslmode=require"), "postgres://mmc:***@db:5432/mmc?sslmode=require");
        assert_eq!(redact("postgres://db/mmc"), "postgres://db/mmc");
        assert_eq!(redact("postgresql://u@h/d?password=x"), "postgresql://u:***@h/d?");
    }
}
