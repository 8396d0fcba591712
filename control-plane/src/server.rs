//! Router and startup. [`serve`] takes an already-bound listener and a shutdown future, so tests
//! bind port 0 and run many servers in parallel.

use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use crate::api::{filter, keys, plans, workspaces, AppState};
use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::store::{SqliteStore, StoreError};
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
    let state = build_state(config).await?;
    let store = state.store.clone();
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "control plane listening");
    println!("Listening on http://{addr}");
    // Flushed so scripts and tests reading stdout through a pipe see it now.
    io::stdout().flush()?;
    let result = axum::serve(listener.tap_io(tune_connection), router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    store.close().await;
    tracing::info!("control plane stopped");
    Ok(result?)
}

async fn build_state(config: ServeConfig) -> Result<AppState, ServeError> {
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
    let path = config.database_path();
    let store = SqliteStore::open(&path)
        .await
        .map_err(|source| ServeError::Database { path, source })?;
    Ok(AppState {
        store: Arc::new(store),
        admin_token,
        filter_token,
        key_cache_ttl_ms: config.key_cache_ttl_ms,
    })
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

pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/v1/plans", get(plans::list))
        .route(
            "/v1/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route("/v1/workspaces/{workspace_id}", get(workspaces::get))
        .route(
            "/v1/workspaces/{workspace_id}/keys",
            get(keys::list).post(keys::create),
        )
        .route(
            "/v1/keys/{key_id}",
            get(keys::get).patch(keys::update).delete(keys::delete),
        )
        .route("/v1/keys/{key_id}/rotate", post(keys::rotate))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let filter = Router::new()
        .route("/v1/filter/keys/{hash}", get(filter::lookup))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_filter,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(admin)
        .merge(filter)
        .fallback(|| async { ApiError::NotFound("not found".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match authorize(&state.admin_token, req.headers(), "invalid admin token") {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn require_filter(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match authorize(&state.filter_token, req.headers(), "invalid filter token") {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn authorize(expected: &Token, headers: &HeaderMap, wrong: &'static str) -> Result<(), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(tokens::bearer)
        .ok_or(ApiError::Unauthorized(
            "malformed Authorization header (expected 'Bearer <token>')",
        ))?;
    if expected.matches(token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(wrong))
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
