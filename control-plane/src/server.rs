//! Router and startup. [`serve`] takes an already-bound listener and a shutdown future, so tests
//! bind port 0 and run many servers in parallel.

use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::MethodRouter;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use crate::api::auth::{authenticate, require_filter};
use crate::api::{
    self, analytics, console, ext_authz, filter, ingest, keys, leases, plans, workspaces, AppState,
};
use crate::body_limit::{self, BodyLimit, MAX_BODY_BYTES};
use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::metrics::{self, Metrics};
use crate::store::{ObservedStore, PostgresStore, SqliteStore, Store, StoreError};
use crate::tokens::{self, Token, TokenKind};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("cannot load the {what}: {source}")]
    Token {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Database { path: PathBuf, source: StoreError },
    /// The URL is not shown: it may hold a password.
    #[error("cannot open the PostgreSQL database: {source}")]
    Postgres { source: StoreError },
    #[error("cannot listen on {addr} for metrics: {source}")]
    MetricsListen { addr: String, source: io::Error },
    #[error("server error: {0}")]
    Io(#[from] io::Error),
}

/// Runs the control plane on `listener` until `shutdown` completes, then drains in-flight
/// requests and closes the database. Generated tokens are printed once on stdout, followed by
/// `Listening on http://<addr>` when the server is ready.
pub async fn serve(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let retention = config.retention;
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => {
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::MetricsListen {
                        addr: addr.clone(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    let (state, store) = build_state(config).await?;
    let metrics = state.metrics().clone();
    let retention_task = tokio::spawn(run_retention(store.clone(), retention, metrics.clone()));
    let sweep_task = tokio::spawn(run_lease_sweep(store.clone()));
    let upkeep_task = tokio::spawn(run_metrics_upkeep(metrics));
    let mut tasks = vec![retention_task, sweep_task, upkeep_task];
    let app = match metrics_listener {
        Some(metrics_listener) => {
            let metrics_addr = metrics_listener.local_addr()?;
            tracing::info!(addr = %metrics_addr, "metrics listening");
            println!("Metrics on http://{metrics_addr}/metrics");
            let metrics_app = Router::new()
                .route("/metrics", axum::routing::get(api::metrics::scrape))
                .with_state(state.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(metrics_listener, metrics_app).await {
                    tracing::warn!(error = %e, "metrics listener stopped");
                }
            }));
            router(state, MetricsRoute::Elsewhere)
        }
        None => router(state, MetricsRoute::Here),
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "control plane listening");
    println!("Listening on http://{addr}");
    // Flushed so scripts and tests reading stdout through a pipe see it now.
    io::stdout().flush()?;
    // The peer's address, for the dashboard's sign-in throttle.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener.tap_io(tune_connection), app)
        .with_graceful_shutdown(shutdown)
        .await;
    // Stopped before the store closes: a pass still running would find its pool closed.
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    store.close().await;
    tracing::info!("control plane stopped");
    Ok(result?)
}

/// The application's state, and the store behind it (for retention, the lease sweep and
/// shutdown).
async fn build_state(config: ServeConfig) -> Result<(AppState, Arc<dyn Store>), ServeError> {
    create_data_dir(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let admin_token = load_token(
        TokenKind::Admin,
        config.admin_token.clone(),
        &config.data_dir,
    )?;
    let filter_token = load_token(
        TokenKind::Filter,
        config.filter_token.clone(),
        &config.data_dir,
    )?;
    let metrics = Metrics::new();
    let backend: Arc<dyn Store> = match &config.database_url {
        Some(url) => Arc::new(
            PostgresStore::open(url)
                .await
                .map_err(|source| ServeError::Postgres { source })?
                .with_metrics(metrics.clone()),
        ),
        None => {
            let path = config.database_path();
            Arc::new(
                SqliteStore::open_with_lookup_cache(&path, config.lookup_cache_entries)
                    .await
                    .map_err(|source| ServeError::Database { path, source })?
                    .with_metrics(metrics.clone()),
            )
        }
    };
    let store: Arc<dyn Store> = Arc::new(ObservedStore::new(backend, metrics.clone()));
    let state = AppState::new(
        store.clone(),
        admin_token,
        filter_token,
        config.key_cache_ttl_ms,
        config.lease_ttl_ms,
    )
    .with_metrics(metrics);
    Ok((state, store))
}

fn create_data_dir(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

fn load_token(
    kind: TokenKind,
    configured: Option<Token>,
    data_dir: &Path,
) -> Result<Token, ServeError> {
    let loaded =
        tokens::load_or_create(kind, configured, data_dir).map_err(|source| ServeError::Token {
            what: kind.label(),
            source,
        })?;
    if loaded.generated {
        // The only place a generated token is ever shown; it is never logged.
        println!("{}: {}", kind.label(), loaded.token.expose());
        println!(
            "  (saved in {}; set {} to use your own)",
            kind.path(data_dir).display(),
            kind.env_var()
        );
    }
    Ok(loaded.token)
}

/// Where `GET /metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsRoute {
    /// On the main listener (the default).
    Here,
    /// On the `--metrics-listen` address only.
    Elsewhere,
}

/// One route of the REST API: its path, methods and handlers, written once ([`api_route!`]) so
/// that the router and [`api_routes`] (the list the tests walk) cannot differ.
struct ApiRoute {
    path: &'static str,
    methods: &'static [&'static str],
    handler: MethodRouter<AppState>,
}

impl ApiRoute {
    /// With a body limit of its own.
    fn limited(self, max: usize) -> Self {
        Self {
            handler: body_limit::route(self.handler, json_limit(max)),
            ..self
        }
    }
}

/// `api_route!("/v1/x", get(list), post(create))`: the route, its methods named from the
/// `axum::routing` functions that add them.
macro_rules! api_route {
    ($path:expr, $first:ident($handler:expr) $(, $method:ident($more:expr))* $(,)?) => {
        ApiRoute {
            path: $path,
            methods: &[stringify!($first) $(, stringify!($method))*],
            handler: axum::routing::$first($handler) $(.$method($more))*,
        }
    };
}

/// Admin token or console token; handlers check what the principal may see.
fn admin_routes() -> Vec<ApiRoute> {
    vec![
        api_route!("/v1/whoami", get(console::whoami)),
        api_route!("/v1/plans", get(plans::list), post(plans::create)),
        api_route!(
            "/v1/workspaces",
            get(workspaces::list),
            post(workspaces::create)
        ),
        api_route!(
            "/v1/workspaces/{workspace_id}",
            get(workspaces::get),
            patch(workspaces::update)
        ),
        api_route!(
            "/v1/workspaces/{workspace_id}/keys",
            get(keys::list),
            post(keys::create)
        ),
        api_route!(
            "/v1/workspaces/{workspace_id}/usage",
            get(analytics::workspace_usage)
        ),
        api_route!(
            "/v1/workspaces/{workspace_id}/console-tokens",
            get(console::list),
            post(console::create)
        ),
        api_route!("/v1/console-tokens/{id}", delete(console::delete)),
        api_route!(
            "/v1/keys/{key_id}",
            get(keys::get),
            patch(keys::update),
            delete(keys::delete)
        ),
        api_route!("/v1/keys/{key_id}/rotate", post(keys::rotate)),
        api_route!("/v1/keys/{key_id}/usage", get(analytics::key_usage)),
        api_route!("/v1/requests", get(analytics::requests)),
        api_route!("/v1/requests.csv", get(analytics::requests_csv)),
    ]
}

/// The filter token's: the lookup, budget leases and usage ingest (each with its body limit).
fn filter_routes() -> Vec<ApiRoute> {
    vec![
        api_route!("/v1/filter/keys/{hash}", get(filter::lookup)).limited(MAX_BODY_BYTES),
        api_route!("/v1/filter/usage", post(ingest::ingest)).limited(ingest::MAX_BODY_BYTES),
        api_route!("/v1/filter/leases", post(leases::lease)).limited(leases::MAX_BODY_BYTES),
    ]
}

/// No token: Envoy's ext_authz forwards only the client's headers, and the answer is only
/// about the key the caller already holds. No body limit (`body_limit.rs` says why).
fn ext_authz_routes() -> Vec<ApiRoute> {
    ext_authz::PATHS
        .into_iter()
        .map(|path| api_route!(path, any(ext_authz::check)))
        .collect()
}

/// The REST API's OpenAPI description as `docs/openapi.json` holds it (`tollgate openapi`).
pub fn openapi_document() -> String {
    api::openapi::document_text()
}

fn public_routes() -> Vec<ApiRoute> {
    vec![
        api_route!("/healthz", get(healthz)),
        api_route!("/v1/openapi.json", get(api::openapi::serve)),
    ]
}

/// Every route of the REST API as `(path, methods)`, methods upper-case (`ANY`: every method).
/// The dashboard's pages under `/ui` and `GET /metrics` (text, no input) are not in it.
pub fn api_routes() -> Vec<(&'static str, Vec<String>)> {
    [
        public_routes(),
        admin_routes(),
        filter_routes(),
        ext_authz_routes(),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        let methods = r.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        (r.path, methods)
    })
    .collect()
}

fn routes(list: Vec<ApiRoute>) -> Router<AppState> {
    list.into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
}

/// The API's answer to a body over its limit.
fn json_limit(max: usize) -> BodyLimit {
    BodyLimit {
        max,
        too_large: || ApiError::PayloadTooLarge.into_response(),
    }
}

pub fn router(state: AppState, metrics_route: MetricsRoute) -> Router {
    // The body limit inside the token check: an unauthenticated caller is refused first, and
    // nothing of its body is read either way.
    let admin = body_limit::router(routes(admin_routes()), json_limit(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let filter = routes(filter_routes()).route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_filter,
    ));
    let mut app = body_limit::router(routes(public_routes()), json_limit(MAX_BODY_BYTES));
    if metrics_route == MetricsRoute::Here {
        // No token, like /healthz: scrapers are configured without one (README.md, "Metrics").
        app = app.route("/metrics", axum::routing::get(api::metrics::scrape));
    }
    let metrics = state.metrics().clone();
    app.merge(admin)
        .merge(filter)
        .merge(routes(ext_authz_routes()))
        .merge(crate::web::router(state.clone()))
        // Inside the router, where the matched route is known (added after every route).
        .route_layer(middleware::from_fn(metrics::tag_route))
        .fallback(|| async { ApiError::NotFound("not found".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Around it, so fallbacks (404, 405) are counted too.
        .layer(middleware::from_fn_with_state(
            metrics,
            metrics::track_requests,
        ))
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Raw records deleted per statement, so ingest never waits long behind retention.
const RETENTION_BATCH: u32 = 5_000;

/// Every `retention.every` (first run at startup): raw usage records older than
/// `retention.raw_days`, then rollups older than `retention.rollup_days` (0 = keep forever).
async fn run_retention(
    store: Arc<dyn Store>,
    retention: crate::config::Retention,
    metrics: Metrics,
) {
    let mut ticker = tokio::time::interval(retention.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match apply_retention(store.as_ref(), &retention, crate::clock::now_ms()).await {
            Ok(deleted) => metrics.retention_done(deleted),
            Err(e) => {
                metrics.retention_failed();
                tracing::warn!(error = %e, "retention pass failed; retrying at the next one");
            }
        }
    }
}

/// Every [`metrics::UPKEEP_EVERY`]: histogram samples folded into their buckets.
async fn run_metrics_upkeep(metrics: Metrics) {
    let mut ticker = tokio::time::interval(metrics::UPKEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        metrics.run_upkeep();
    }
}

pub async fn apply_retention(
    store: &dyn Store,
    retention: &crate::config::Retention,
    now_ms: i64,
) -> Result<u64, StoreError> {
    const DAY_MS: i64 = 86_400_000;
    let mut deleted = 0;
    if retention.raw_days > 0 {
        let cutoff = now_ms - i64::from(retention.raw_days) * DAY_MS;
        loop {
            let n = store.purge_records(cutoff, RETENTION_BATCH).await?;
            deleted += n;
            if n < u64::from(RETENTION_BATCH) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let rollup_cutoff = if retention.rollup_days > 0 {
        now_ms - i64::from(retention.rollup_days) * DAY_MS
    } else {
        i64::MIN
    };
    store.purge_rollups(rollup_cutoff, now_ms).await?;
    if deleted > 0 {
        tracing::info!(deleted, "retention: deleted old usage records");
    }
    Ok(deleted)
}

/// How often leases left unsettled past their grace are charged and deleted (grants sweep their
/// own key's as well).
const LEASE_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Every [`LEASE_SWEEP_EVERY`]: the expired leases of every key (`Store::sweep_leases`).
async fn run_lease_sweep(store: Arc<dyn Store>) {
    let mut ticker = tokio::time::interval(LEASE_SWEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match store.sweep_leases(crate::clock::now_ms()).await {
            Ok(0) => {}
            Ok(swept) => tracing::debug!(swept, "expired leases charged"),
            Err(e) => tracing::warn!(error = %e, "lease sweep failed; retrying at the next one"),
        }
    }
}

/// TCP_NODELAY: Envoy's callouts are small request/response pairs that would otherwise wait on
/// Nagle + delayed ACK (~40 ms). Keep-alive probes drop pooled connections whose peer vanished.
pub(crate) fn tune_connection(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(&*tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot enable TCP keep-alive");
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed by this call, not on
/// first poll, so a signal sent as soon as the server says it is listening is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}");
                None
            }
        };
        let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
        let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
        async move {
            tokio::select! {
                () = recv_or_wait(terminate.as_mut()) => {},
                () = recv_or_wait(interrupt.as_mut()) => {},
            }
            tracing::info!("shutting down");
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
    }
}

#[cfg(unix)]
async fn recv_or_wait(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
