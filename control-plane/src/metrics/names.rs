//! Every metric the control plane exports, its labels and their values: the one place a name is
//! spelled (README.md, "Metrics", documents each).

/// Requests answered, by `method`, `route` and `status`.
pub const HTTP_REQUESTS: &str = "tollgate_http_requests_total";
/// Time to answer a request (until the response's head is ready), by `method` and `route`.
pub const HTTP_REQUEST_DURATION: &str = "tollgate_http_request_duration_seconds";
/// Filter lookups (`GET /v1/filter/keys/{hash}`, ext_authz) by `source`.
pub const LOOKUPS: &str = "tollgate_lookups_total";
/// Usage records of `POST /v1/filter/usage` by `outcome`.
pub const INGEST_RECORDS: &str = "tollgate_ingest_records_total";
/// Time to store one usage batch (its records' share of a group commit included).
pub const INGEST_BATCH_DURATION: &str = "tollgate_ingest_batch_duration_seconds";
/// Store calls that failed in the backend (not answers such as "key not found"), by `operation`.
pub const STORE_ERRORS: &str = "tollgate_store_errors_total";
/// Retention passes by `result`.
pub const RETENTION_RUNS: &str = "tollgate_retention_runs_total";
/// Raw usage records deleted by retention.
pub const RETENTION_DELETED_RECORDS: &str = "tollgate_retention_deleted_records_total";

pub const LABEL_METHOD: &str = "method";
pub const LABEL_ROUTE: &str = "route";
pub const LABEL_STATUS: &str = "status";
pub const LABEL_SOURCE: &str = "source";
pub const LABEL_OUTCOME: &str = "outcome";
pub const LABEL_OPERATION: &str = "operation";
pub const LABEL_RESULT: &str = "result";

/// `route` of a request no route matched (the raw path is never a label: unbounded).
pub const ROUTE_UNMATCHED: &str = "unmatched";
/// `method` of a method outside the standard ones (clients may send any token).
pub const METHOD_OTHER: &str = "other";

/// `source` of a lookup answered from the SQLite store's lookup cache.
pub const SOURCE_CACHE: &str = "cache";
/// `source` of a lookup that read the database.
pub const SOURCE_DATABASE: &str = "database";

pub const OUTCOME_ACCEPTED: &str = "accepted";
pub const OUTCOME_DUPLICATE: &str = "duplicate";
pub const OUTCOME_REJECTED: &str = "rejected";

pub const RESULT_OK: &str = "ok";
pub const RESULT_ERROR: &str = "error";

/// Upper bounds (seconds) of the latency histograms' buckets: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
