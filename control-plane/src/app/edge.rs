//! What the edge asks of the control plane: the key a secret hash authenticates (the filter's
//! lookup, ext_authz), and the storage of its usage records. Its budget leases: `leases.rs`.

use std::time::Instant;

use super::leases::{self, LookupLeases};
use super::{AppError, AppState};
use crate::domain::{Grant, IngestOutcome, KeyLookup, UsageRecord, LAST_USED_RESOLUTION_MS};
use crate::secret::SecretHash;

/// The key a hash authenticates, marked as used: a request was made with it at the edge.
pub async fn find_key(
    app: &AppState,
    hash: &SecretHash,
    now: i64,
) -> Result<Option<KeyLookup>, AppError> {
    let Some(found) = app.store().lookup_key(hash, now).await? else {
        return Ok(None);
    };
    let stale = found
        .last_used_at
        .is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MS);
    if stale {
        // At most once a minute per key; written in the background, but before any later delete
        // of the key decides, so a key is never deletable once a lookup has answered for it.
        if let Err(e) = app
            .store()
            .touch_key(&found.key_id, now, LAST_USED_RESOLUTION_MS)
            .await
        {
            tracing::warn!(key_id = %found.key_id, error = %e, "cannot record key use");
        }
    }
    Ok(Some(found))
}

/// The filter's lookup (`docs/protocol.md`, "key lookup"): the key a hash authenticates, marked
/// as used, and the first leases the lookup asked for (`asked`; none when `None`).
pub async fn lookup(
    app: &AppState,
    hash: &SecretHash,
    asked: Option<&LookupLeases>,
    now: i64,
) -> Result<Option<(KeyLookup, Vec<Grant>)>, AppError> {
    let Some(found) = find_key(app, hash, now).await? else {
        return Ok(None);
    };
    let leases = match asked {
        Some(asked) => leases::grant_with_lookup(app, &found, asked, now).await?,
        None => Vec::new(),
    };
    Ok(Some((found, leases)))
}

/// Stores a batch of validated records (exactly once each, see `Store::ingest_usage`);
/// `malformed` is how many records of the batch were refused before (counted with the store's
/// rejections).
pub async fn ingest(
    app: &AppState,
    records: Vec<UsageRecord>,
    malformed: usize,
) -> Result<IngestOutcome, AppError> {
    let metrics = app.metrics();
    metrics.ingest_rejected(u64::try_from(malformed).unwrap_or(u64::MAX));
    let start = Instant::now();
    let outcome = app.store().ingest_usage(records).await?;
    let rejected = u64::try_from(outcome.rejected.len()).unwrap_or(u64::MAX);
    metrics.ingest_batch(
        outcome.accepted,
        outcome.duplicates,
        rejected,
        start.elapsed(),
    );
    Ok(outcome)
}
