//! Requests by route and status, and their latency. The route is the template the router
//! matched (`/v1/keys/{key_id}`), never the raw path, so the number of series stays bounded.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::names::{METHOD_OTHER, ROUTE_UNMATCHED};
use super::Metrics;

/// The matched route, carried from [`tag_route`] (inside the router, where it is known) out to
/// [`track_requests`] (around it, where fallbacks are seen too).
#[derive(Clone)]
struct RouteTemplate(MatchedPath);

/// A route layer: marks the response with the route that matched.
pub async fn tag_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(RouteTemplate(matched));
    }
    response
}

/// A layer around the whole router: counts every request and times it.
pub async fn track_requests(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let method = method_label(request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or(ROUTE_UNMATCHED, |r| r.0.as_str());
    metrics.http_request(method, route, response.status().as_u16(), start.elapsed());
    response
}

/// The standard methods by name; any other token a client sends is one label value.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => METHOD_OTHER,
    }
}
