//! The rate-limit check routes make before doing work: signed-in viewers by user id, anonymous
//! ones by client address, a sliding window on the shared cache (per-process when the cache is
//! down). Over the limit is an [`ApiError::TooManyRequests`]; under it, the response carries
//! `X-RateLimit-*` like the 429 does.

use axum::http::HeaderMap;
use axum::response::Response;

use crate::cache::ratelimit::Decision;
use crate::config::RateLimit;
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::error::{insert_ratelimit_headers, ApiError};
use crate::platform::input::client_address;

/// A route's limits: its name (keys are per route) and the window for each kind of viewer.
#[derive(Debug, Clone, Copy)]
pub struct RouteLimit {
    pub route: &'static str,
    pub signed_in: RateLimit,
    pub anonymous: RateLimit,
}

/// A request that was let through; its decision's headers go on the response.
#[derive(Debug, Clone, Copy)]
pub struct Allowed(Decision);

impl Allowed {
    pub fn apply(self, mut response: Response) -> Response {
        insert_ratelimit_headers(response.headers_mut(), &self.0);
        response
    }
}

/// Checks the viewer's limit on `limit.route`: 429 (with `Retry-After` and `X-RateLimit-*`)
/// when over it.
pub async fn check(
    app: &App,
    limit: RouteLimit,
    viewer: &Viewer,
    headers: &HeaderMap,
) -> Result<Allowed, ApiError> {
    let (subject, window) = match viewer {
        Viewer::User { user_id } => (format!("user:{user_id}"), limit.signed_in),
        Viewer::Anonymous => (format!("ip:{}", client_address(headers)), limit.anonymous),
    };
    let decision = app
        .ratelimiter
        .check(&app.cache, limit.route, &subject, window)
        .await;
    if decision.allowed {
        return Ok(Allowed(decision));
    }
    tracing::info!(
        route = limit.route,
        limit = decision.limit,
        local = decision.local,
        "rate limited"
    );
    Err(ApiError::TooManyRequests(decision))
}
