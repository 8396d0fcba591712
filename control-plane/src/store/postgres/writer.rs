//! Group commit of usage batches: `ingest_usage` queues its batch and waits; the writer task
//! takes every batch queued (up to [`GROUP_MAX_RECORDS`]) and stores them in one transaction
//! (`ingest.rs`), so concurrent deliveries share the statements, the count rows and the
//! commit's flush instead of each paying for them.
//!
//! One writer per control plane: with two, each group was half as large, so the per-key count
//! rows written per record doubled, and the two transactions' inserts met on the same index
//! pages; measured on the bench's workload, PostgreSQL spent 28 instead of 18 µs of CPU per
//! record for the same throughput. Replicas each have their own writer.
//!
//! A failed attempt runs again, as often as [`RETRIES`] allows: after a deadlock or
//! serialization failure as it was; after a record was found stored already, skipping the
//! records stored (`Insert::SkipStored`); after another control plane dropped a partition this
//! one thought was there, with the partitions looked up again. Any other error fails every batch
//! of the group (each caller answers 5xx and its Envoy delivers the batch again).

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::domain::{IngestOutcome, UsageRecord};
use crate::store::group_commit::{self, IngestJob};
use crate::store::postgres::ingest::{store_group, Insert, COUNT_SLOTS};
use crate::store::postgres::names::Known;
use crate::store::postgres::{retryable, sqlstate, RETRIES};
use crate::store::{StoreError, StoreResult};

/// Records one transaction takes from queued batches.
const GROUP_MAX_RECORDS: usize = 10_000;
/// Batches waiting for the writer (each at most the ingest API's 10,000 records, so the queue
/// holds at most 640,000); `ingest_usage` waits for room beyond this.
const QUEUE_MAX: usize = 64;

#[derive(Debug)]
pub(super) struct Writer {
    queue: mpsc::Sender<IngestJob>,
    task: AbortHandle,
}

impl Writer {
    pub(super) fn start(pool: PgPool, known: Arc<Known>) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE_MAX);
        // The writer adds to the count rows of a slot of its own, so the writers of other
        // control planes rarely wait for its row locks.
        let slot = rand::random_range(0..COUNT_SLOTS);
        let task = tokio::spawn(async move { write(&pool, &known, jobs, slot).await });
        Self {
            queue,
            task: task.abort_handle(),
        }
    }

    /// Stores `records` with whatever else is queued; their outcome.
    pub(super) async fn ingest(&self, records: Vec<UsageRecord>) -> StoreResult<IngestOutcome> {
        group_commit::submit(&self.queue, records).await
    }

    pub(super) fn stop(&self) {
        self.task.abort();
    }
}

/// The writer task: gathers a group, stores it, answers each of its callers; until the queue
/// closes.
async fn write(pool: &PgPool, known: &Known, mut jobs: mpsc::Receiver<IngestJob>, slot: i16) {
    while let Some(first) = jobs.recv().await {
        let group = group_commit::gather(first, &mut jobs, GROUP_MAX_RECORDS);
        let result = store_with_retries(pool, known, &group_commit::batches(&group), slot).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, batches = group.len(), "usage ingest failed");
        }
        group_commit::answer(group, result);
    }
}

/// Why an attempt failed, as far as the next attempt is concerned.
enum Failure {
    /// Deadlock or serialization failure: the same again.
    Conflict,
    /// A record is stored already: again, skipping the stored records.
    Stored,
    /// A record's day has no partition (another control plane's retention dropped it).
    NoPartition,
    Other,
}

fn failure(e: &StoreError) -> Failure {
    if retryable(e) {
        return Failure::Conflict;
    }
    match sqlstate(e).as_deref() {
        Some("23505") => Failure::Stored,
        Some("23514") => Failure::NoPartition,
        _ => Failure::Other,
    }
}

async fn store_with_retries(
    pool: &PgPool,
    known: &Known,
    batches: &[&[UsageRecord]],
    slot: i16,
) -> StoreResult<Vec<IngestOutcome>> {
    let mut insert = Insert::Copy;
    let mut attempt = 0;
    loop {
        let e = match store_group(pool, known, batches, insert, slot).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(e) => e,
        };
        match failure(&e) {
            // Not counted: it happens at most once, and decides nothing about the next attempt.
            Failure::Stored if insert == Insert::Copy => {
                insert = Insert::SkipStored;
                continue;
            }
            Failure::Conflict if attempt < RETRIES => attempt += 1,
            Failure::NoPartition if attempt < RETRIES => {
                known.forget_partitions();
                attempt += 1;
            }
            _ => return Err(e),
        }
    }
}
