//! The queue of group commit, shared by both backends' ingest writers: `ingest_usage` queues its
//! batch and waits; a writer takes the batch at the head and every batch queued behind it (up to
//! a number of records), stores them in one transaction and answers each caller.

use tokio::sync::{mpsc, oneshot};

use crate::domain::{IngestOutcome, UsageRecord};
use crate::store::{StoreError, StoreResult};

/// One `ingest_usage` call waiting for a writer.
pub(crate) struct IngestJob {
    pub records: Vec<UsageRecord>,
    reply: oneshot::Sender<StoreResult<IngestOutcome>>,
}

/// Queues `records` for the writer behind `queue` and waits for their outcome.
pub(crate) async fn submit(
    queue: &mpsc::Sender<IngestJob>,
    records: Vec<UsageRecord>,
) -> StoreResult<IngestOutcome> {
    let (reply, outcome) = oneshot::channel();
    let stopped = || StoreError::Backend("the ingest writer has stopped".into());
    queue
        .send(IngestJob { records, reply })
        .await
        .map_err(|_| stopped())?;
    outcome.await.map_err(|_| stopped())?
}

/// `first` and the jobs queued behind it, while the group holds fewer than `max_records`.
pub(crate) fn gather(
    first: IngestJob,
    jobs: &mut mpsc::Receiver<IngestJob>,
    max_records: usize,
) -> Vec<IngestJob> {
    let mut queued = first.records.len();
    let mut group = vec![first];
    while queued < max_records {
        match jobs.try_recv() {
            Ok(job) => {
                queued += job.records.len();
                group.push(job);
            }
            Err(_) => break,
        }
    }
    group
}

/// The group's batches, in order, for its transaction.
pub(crate) fn batches(group: &[IngestJob]) -> Vec<&[UsageRecord]> {
    group.iter().map(|j| j.records.as_slice()).collect()
}

/// Answers each job of `group` with its outcome (in order), or every one with the error.
pub(crate) fn answer(group: Vec<IngestJob>, result: StoreResult<Vec<IngestOutcome>>) {
    match result {
        Ok(outcomes) => {
            for (job, outcome) in group.into_iter().zip(outcomes) {
                // The caller may have gone (client disconnected): nothing to tell.
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for job in group {
                // Each caller gets the cause as text, and the kind as it was: a full database
                // stays `Full` (503, try later), not a generic failure.
                let source = message.clone().into();
                let error = match e {
                    StoreError::Full(_) => StoreError::Full(source),
                    _ => StoreError::Backend(source),
                };
                let _ = job.reply.send(Err(error));
            }
        }
    }
}
