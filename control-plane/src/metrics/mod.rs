//! The control plane's Prometheus metrics (README.md, "Metrics"). Each server has its own
//! recorder rather than the `metrics` crate's global one: tests run many servers in one process,
//! and each must count only its own. The facts are counted where they are known: requests by
//! the router's middleware (`http.rs`), lookups by the store that answered them, ingest outcomes
//! by the application layer, store errors by `store::ObservedStore`, retention by its task.

mod http;
pub mod names;

pub use http::{tag_route, track_requests};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use names::*;

/// How often histogram samples are folded into their buckets between scrapes, so an unscraped
/// server does not keep every sample.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// A server's metrics; cheap to clone (one registry behind an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    // Registered once: the label sets of these are fixed.
    lookups_cache: Counter,
    lookups_database: Counter,
    ingest_accepted: Counter,
    ingest_duplicate: Counter,
    ingest_rejected: Counter,
    ingest_batch: Histogram,
    retention_ok: Counter,
    retention_error: Counter,
    retention_deleted: Counter,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Where metrics are registered from (the `metrics` crate's metadata; not exported).
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

impl Metrics {
    pub fn new() -> Metrics {
        // Only an empty bucket list is refused, and this one is not.
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        describe(&recorder);
        let counter = |name: &'static str, label: &'static str, value: &'static str| {
            recorder.register_counter(&key(name, &[(label, value)]), &METADATA)
        };
        let inner = Inner {
            lookups_cache: counter(LOOKUPS, LABEL_SOURCE, SOURCE_CACHE),
            lookups_database: counter(LOOKUPS, LABEL_SOURCE, SOURCE_DATABASE),
            ingest_accepted: counter(INGEST_RECORDS, LABEL_OUTCOME, OUTCOME_ACCEPTED),
            ingest_duplicate: counter(INGEST_RECORDS, LABEL_OUTCOME, OUTCOME_DUPLICATE),
            ingest_rejected: counter(INGEST_RECORDS, LABEL_OUTCOME, OUTCOME_REJECTED),
            ingest_batch: recorder
                .register_histogram(&Key::from_static_name(INGEST_BATCH_DURATION), &METADATA),
            retention_ok: counter(RETENTION_RUNS, LABEL_RESULT, RESULT_OK),
            retention_error: counter(RETENTION_RUNS, LABEL_RESULT, RESULT_ERROR),
            retention_deleted: recorder
                .register_counter(&Key::from_static_name(RETENTION_DELETED_RECORDS), &METADATA),
            handle: recorder.handle(),
            recorder,
        };
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// The text exposition format (Prometheus 0.0.4) of every metric.
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Folds recent histogram samples into their buckets (every [`UPKEEP_EVERY`]).
    pub fn run_upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// One answered request: `route` is the matched route's template.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let r = &self.inner.recorder;
        let labels = [
            (LABEL_METHOD, method.to_owned()),
            (LABEL_ROUTE, route.to_owned()),
        ];
        let mut with_status = labels.to_vec();
        with_status.push((LABEL_STATUS, status.to_string()));
        r.register_counter(&owned_key(HTTP_REQUESTS, with_status), &METADATA)
            .increment(1);
        r.register_histogram(
            &owned_key(HTTP_REQUEST_DURATION, labels.to_vec()),
            &METADATA,
        )
        .record(elapsed.as_secs_f64());
    }

    /// A lookup answered from the store's lookup cache.
    pub fn lookup_from_cache(&self) {
        self.inner.lookups_cache.increment(1);
    }

    /// A lookup that read the database.
    pub fn lookup_from_database(&self) {
        self.inner.lookups_database.increment(1);
    }

    /// One ingested batch: what the store did with its records, and how long it took.
    pub fn ingest_batch(&self, accepted: u64, duplicates: u64, rejected: u64, took: Duration) {
        let i = &self.inner;
        i.ingest_accepted.increment(accepted);
        i.ingest_duplicate.increment(duplicates);
        i.ingest_rejected.increment(rejected);
        i.ingest_batch.record(took.as_secs_f64());
    }

    /// Records refused before they reached the store (malformed or invalid).
    pub fn ingest_rejected(&self, rejected: u64) {
        self.inner.ingest_rejected.increment(rejected);
    }

    /// A store call that failed in its backend.
    pub fn store_error(&self, operation: &'static str) {
        self.inner
            .recorder
            .register_counter(
                &key(STORE_ERRORS, &[(LABEL_OPERATION, operation)]),
                &METADATA,
            )
            .increment(1);
    }

    /// A retention pass that deleted `deleted` raw records.
    pub fn retention_done(&self, deleted: u64) {
        self.inner.retention_ok.increment(1);
        self.inner.retention_deleted.increment(deleted);
    }

    /// A retention pass that failed.
    pub fn retention_failed(&self) {
        self.inner.retention_error.increment(1);
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v)).collect();
    Key::from_parts(name, labels)
}

fn owned_key(name: &'static str, labels: Vec<(&'static str, String)>) -> Key {
    let labels: Vec<Label> = labels.into_iter().map(|(k, v)| Label::new(k, v)).collect();
    Key::from_parts(name, labels)
}

/// HELP lines (and units) of every metric.
fn describe(r: &PrometheusRecorder) {
    let counters = [
        (
            HTTP_REQUESTS,
            "Requests answered, by method, matched route template and status.",
        ),
        (
            LOOKUPS,
            "Filter key lookups by where the answer came from (cache or database).",
        ),
        (
            INGEST_RECORDS,
            "Usage records received, by outcome (accepted, duplicate, rejected).",
        ),
        (
            STORE_ERRORS,
            "Store calls that failed in the database backend, by operation.",
        ),
        (RETENTION_RUNS, "Retention passes, by result (ok, error)."),
        (
            RETENTION_DELETED_RECORDS,
            "Raw usage records deleted by retention.",
        ),
    ];
    for (name, help) in counters {
        r.describe_counter(KeyName::from_const_str(name), None, help.into());
    }
    let histograms = [
        (
            HTTP_REQUEST_DURATION,
            "Time to answer a request, by method and matched route template.",
        ),
        (INGEST_BATCH_DURATION, "Time to store one usage batch."),
    ];
    for (name, help) in histograms {
        r.describe_histogram(
            KeyName::from_const_str(name),
            Some(Unit::Seconds),
            help.into(),
        );
    }
}
