//! Request body limits. A route's limit is enforced twice, so no body is ever buffered past it:
//! a `Content-Length` over the limit is refused before a byte of the body is read, and a body
//! without one (chunked) is cut off at the limit by the extractor that reads it
//! (`DefaultBodyLimit`; the API's `JsonBody` and the dashboard's `FormBody` answer that with
//! the same 413). Each surface answers with its own error: the API's JSON, the dashboard's page.
//!
//! The `ext_authz` check has none: it never reads a body, and Envoy sends it the client's own
//! `Content-Length` (an upload's), which must not be refused.

use std::convert::Infallible;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::MethodRouter;
use axum::Router;

/// The limit of the admin API's and the dashboard's bodies, and of the filter's key lookup; the
/// filter's lease and usage routes have their own.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A route's limit and how its surface answers a body over it.
#[derive(Clone, Copy)]
pub struct BodyLimit {
    pub max: usize,
    pub too_large: fn() -> Response,
}

/// Every route of `router` limited to `limit`.
pub fn router<S: Clone + Send + Sync + 'static>(router: Router<S>, limit: BodyLimit) -> Router<S> {
    router
        .layer(middleware::from_fn_with_state(limit, refuse_declared))
        .layer(DefaultBodyLimit::max(limit.max))
}

/// One route limited to `limit` (its own, other than its router's).
pub fn route<S: Clone + Send + Sync + 'static>(
    route: MethodRouter<S>,
    limit: BodyLimit,
) -> MethodRouter<S> {
    route
        .layer::<_, Infallible>(middleware::from_fn_with_state(limit, refuse_declared))
        .layer(DefaultBodyLimit::max(limit.max))
}

/// Refuses a declared length over the limit without reading the body (hyper then closes the
/// connection rather than drain it).
async fn refuse_declared(State(limit): State<BodyLimit>, req: Request, next: Next) -> Response {
    if declared_length(&req).is_some_and(|n| n > limit.max as u64) {
        return (limit.too_large)();
    }
    next.run(req).await
}

/// The request's `Content-Length` (hyper has already refused a malformed or repeated one).
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
