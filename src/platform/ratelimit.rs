//! The rate-limit check routes make before doing work: signed-in viewers by user id, anonymous
//! ones by client bucket ([`crate::platform::client`]: an IPv4 address, an IPv6 /64, found
//! through the proxies `TRUSTED_PROXY` names), a sliding window on the shared cache (per-process when the cache is
//! down). Over the limit is an [`ApiError::TooManyRequests`]; under it, the response carries
//! `X-RateLimit-*` like the 429 does.

use axum::http::request::Parts;
use axum::response::Response;

use crate::cache::ratelimit::Decision;
use crate::config::RateLimit;
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::client::{client_key, ClientKey};
use crate::platform::error::{insert_ratelimit_headers, ApiError};

/// A route's limits: its name (keys are per route) and the window for each kind of viewer;
/// `anonymous: None` leaves anonymous requests unlimited (the CDN fronts them).
#[derive(Debug, Clone, Copy)]
pub struct RouteLimit {
    pub route: &'static str,
    pub signed_in: RateLimit,
    pub anonymous: Option<RateLimit>,
}

impl RouteLimit {
    /// Whether this kind of viewer is limited on the route at all (anonymous ones may not be),
    /// so a route can skip the check without building its future.
    pub fn applies_to(&self, viewer: &Viewer) -> bool {
        matches!(viewer, Viewer::User { .. }) || self.anonymous.is_some()
    }
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

/// Puts the headers of a check that let the request through (if it limited it) on `response`.
pub fn apply(allowed: Option<Allowed>, response: Response) -> Response {
    match allowed {
        Some(a) => a.apply(response),
        None => response,
    }
}

/// The client's bucket, as an extractor: read from the request under the app's
/// `TRUSTED_PROXY` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client(pub ClientKey);

impl Client {
    pub fn of(
        app: &App,
        headers: &axum::http::HeaderMap,
        extensions: &axum::http::Extensions,
    ) -> Client {
        Client(client_key(&app.config.trusted_proxy, headers, extensions))
    }
}

impl axum::extract::FromRequestParts<std::sync::Arc<App>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &std::sync::Arc<App>,
    ) -> Result<Client, Self::Rejection> {
        Ok(Client::of(app, &parts.headers, &parts.extensions))
    }
}

/// Checks the viewer's limit on `limit.route`: 429 (with `Retry-After` and `X-RateLimit-*`)
/// when over it. `None` when the route doesn't limit this kind of viewer.
pub async fn check(
    app: &App,
    limit: RouteLimit,
    viewer: &Viewer,
    client: &Client,
) -> Result<Option<Allowed>, ApiError> {
    let (subject, window) = match (viewer, limit.anonymous) {
        (Viewer::User { user_id }, _) => (format!("user:{user_id}"), limit.signed_in),
        (Viewer::Anonymous, Some(window)) => (format!("ip:{}", client.0), window),
        (Viewer::Anonymous, None) => return Ok(None),
    };
    let decision = app
        .ratelimiter
        .check(&app.cache, limit.route, &subject, window)
        .await;
    if decision.allowed {
        return Ok(Some(Allowed(decision)));
    }
    tracing::info!(
        route = limit.route,
        limit = decision.limit,
        local = decision.local,
        "rate limited"
    );
    Err(ApiError::TooManyRequests(decision))
}
