//! Pruning the change log's removals (migration 0003).
//!
//! Every deleted image leaves a row in `mmc_image_removals` so that scan gateways
//! ([`super::codes`]) drop its code. A gateway catches up before each search, so a removal
//! is read within moments of its commit by every running gateway that searches; one that
//! does not search for days reads it then. Rows older than the retention
//! (`--removal-retention-hours`, a week by default) are deleted by every gateway on the
//! PostgreSQL store, at start and every hour: any number of replicas may do it at once, the
//! deletes are idempotent.
//!
//! A gateway that had not read a pruned removal finds out from
//! `mmc_image_removals_pruned.through`, raised by the same statement, and sweeps its codes
//! for images that no longer exist ([`super::codes`]).

use std::time::Duration;

use sqlx::PgPool;

use super::pg;
use crate::store::StoreError;

/// How often a gateway prunes (after once at start).
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the removals older than `$1` seconds and raises the pruned horizon to the
/// highest change number deleted, in one statement (so a reader sees both or neither).
/// Returns how many were deleted.
const PRUNE: &str = "WITH pruned AS ( \
       DELETE FROM mmc_image_removals WHERE removed_at < now() - make_interval(secs => $1) RETURNING change), \
     raised AS ( \
       UPDATE mmc_image_removals_pruned SET through = greatest(through, (SELECT max(change) FROM pruned)) \
       WHERE EXISTS (SELECT 1 FROM pruned)) \
     SELECT count(*) FROM pruned";

/// Deletes the removals older than `retention`; returns how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, StoreError> {
    let (pruned,): (i64,) = sqlx::query_as(PRUNE).bind(retention.as_secs_f64()).fetch_one(pool).await.map_err(pg)?;
    metrics::counter!("mmc_gateway_removals_pruned_total").increment(pruned as u64);
    Ok(pruned as u64)
}

/// [`prune`], logged; a failure (the database away) is tried again at the next turn.
pub async fn prune_logged(pool: &PgPool, retention: Duration) {
    match prune(pool, retention).await {
        Ok(0) => {}
        Ok(pruned) => tracing::info!(pruned, retention_hours = retention.as_secs_f64() / 3600.0, "old image removals pruned"),
        Err(e) => tracing::warn!("pruning old image removals failed: {e}"),
    }
}

/// Prunes every [`PRUNE_EVERY`] for as long as the process runs (the gateway prunes once
/// at start itself, before it serves).
pub async fn prune_periodically(pool: PgPool, retention: Duration) {
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        prune_logged(&pool, retention).await;
    }
}
