//! The one error type of the HTTP layer and its JSON shape:
//! `{"error":{"code":"…","message":"…"}}`.
//!
//! Library errors are mapped here on purpose (timeouts and pool exhaustion → 503, no row → 404,
//! a model that failed → 502, one that timed out → 504). Every error response is built here,
//! with its headers (`Allow`, `Retry-After`, `X-RateLimit-*`, `WWW-Authenticate`). A 500 logs its
//! detail once and answers a fixed message.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::cache::ratelimit::{self, Decision};
use crate::db::DbError;
use crate::id::InvalidId;
use crate::llm::ModelError;

/// `Retry-After` of a 503: a dependency blipped; most recover within seconds.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;
/// `Retry-After` of a 504 from the model: it was slow, not gone; give it a little longer.
pub const MODEL_TIMEOUT_RETRY_AFTER_SECS: u64 = 5;

/// A report whose verdict is "not working" (health, the cron run), as a 503 with `Retry-After`
/// and `no-store`: the body says what failed, the status makes monitors and Vercel's cron log see
/// it.
pub fn report_unavailable(report: impl Serialize) -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(report)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
    );
    response
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter or body field is missing or out of range; `param` names it.
    #[error("invalid parameter `{param}`: {message}")]
    BadParameter { param: String, message: String },
    /// The body is not valid JSON.
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    #[error("authentication failed: {0}")]
    Unauthorized(String),
    #[error("not found")]
    NotFound,
    #[error("no route for this path")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: String },
    /// The request names a host this server doesn't answer to (a DNS-rebinding page's own
    /// name); `hint` says how to allow it.
    #[error("host `{host}` is not allowed: {hint}")]
    HostNotAllowed { host: String, hint: &'static str },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected content type {expected}")]
    UnsupportedMediaType { expected: &'static str },
    /// Over a rate limit: the decision carries the limit, what remains and when it resets.
    #[error("too many requests")]
    TooManyRequests(Decision),
    /// The model failed before its first token: 504 when it timed out, else 502.
    #[error("{0}")]
    Model(ModelError),
    /// A dependency is down or slow; the client may retry.
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    /// Anything else: logged once, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
}

impl ApiError {
    pub fn bad_parameter(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadParameter {
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } | ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::HostNotAllowed { .. } => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Model(ModelError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Model(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadParameter { .. } => "invalid_parameter",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::RouteNotFound => "route_not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::HostNotAllowed { .. } => "host_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::TooManyRequests(_) => "rate_limited",
            ApiError::Model(ModelError::Timeout) => "model_timeout",
            ApiError::Model(_) => "model_unavailable",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = ?detail, "internal error");
                "internal error".to_owned()
            }
            ApiError::Unavailable(what) => {
                tracing::warn!(dependency = *what, "dependency unavailable");
                self.to_string()
            }
            ApiError::Model(e) => {
                tracing::warn!(kind = e.kind(), "model failed before the first token");
                self.to_string()
            }
            other => other.to_string(),
        };
        let param = match &self {
            ApiError::BadParameter { param, .. } => Some(param.as_str()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                param,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            ApiError::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    headers.insert(header::ALLOW, v);
                }
            }
            ApiError::TooManyRequests(decision) => {
                let retry_after = decision.retry_after_secs(ratelimit::now_ms());
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                insert_ratelimit_headers(headers, decision);
            }
            ApiError::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
                );
            }
            ApiError::Model(ModelError::Timeout) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(MODEL_TIMEOUT_RETRY_AFTER_SECS),
                );
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::NotFound,
            DbError::Timeout
            | DbError::Unavailable(_)
            | DbError::PoolExhausted
            | DbError::CircuitOpen => ApiError::Unavailable("database"),
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds since the epoch), the headers
/// @upstash/ratelimit's users expect, on every answer of a rate-limited route.
pub fn insert_ratelimit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(decision.reset_ms.div_ceil(1000)),
    );
}

/// A client's id that can't be one we issued: a 400 naming where it came from.
impl From<InvalidId> for ApiError {
    fn from(e: InvalidId) -> Self {
        ApiError::bad_parameter(e.param, e.to_string())
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        ApiError::Model(e)
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn an_internal_error_says_nothing_internal() {
        let resp =
            ApiError::Internal(anyhow::anyhow!("password=hunter2 at db.neon.tech")).into_response();
        assert_eq!(resp.status(), 500);
        let body = body_json(resp).await;
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body.to_string().contains("hunter2"));
        assert!(!body.to_string().contains("neon"));
    }

    #[tokio::test]
    async fn a_bad_parameter_names_it() {
        let resp = ApiError::bad_parameter("page", "must be at least 1").into_response();
        assert_eq!(resp.status(), 400);
        let body = body_json(resp).await;
        assert_eq!(body["error"]["param"], "page");
        assert!(body["error"]["message"].as_str().unwrap().contains("page"));
    }

    #[tokio::test]
    async fn method_not_allowed_carries_allow() {
        let resp = ApiError::MethodNotAllowed {
            allow: "GET,HEAD".into(),
        }
        .into_response();
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()[header::ALLOW], "GET,HEAD");
    }

    #[tokio::test]
    async fn a_model_failure_is_502_and_a_model_timeout_504_with_retry_after() {
        let resp = ApiError::from(ModelError::Status(500)).into_response();
        assert_eq!(resp.status(), 502);
        assert_eq!(body_json(resp).await["error"]["code"], "model_unavailable");
        let resp = ApiError::from(ModelError::Timeout).into_response();
        assert_eq!(resp.status(), 504);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(body_json(resp).await["error"]["code"], "model_timeout");
    }

    #[tokio::test]
    async fn too_many_requests_carries_retry_after_and_the_rate_limit_headers() {
        let decision = Decision {
            allowed: false,
            limit: 5,
            remaining: 0,
            reset_ms: ratelimit::now_ms() + 30_000,
            local: false,
        };
        let resp = ApiError::TooManyRequests(decision).into_response();
        assert_eq!(resp.status(), 429);
        let retry: u64 = resp.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((29..=30).contains(&retry), "{retry}");
        assert_eq!(resp.headers()["x-ratelimit-limit"], "5");
        assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    }

    #[tokio::test]
    async fn a_503_says_when_to_retry() {
        let resp = ApiError::Unavailable("database").into_response();
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn database_timeouts_are_503_and_missing_rows_404() {
        assert_eq!(ApiError::from(DbError::Timeout).status(), 503);
        assert_eq!(ApiError::from(DbError::PoolExhausted).status(), 503);
        assert_eq!(ApiError::from(DbError::CircuitOpen).status(), 503);
        assert_eq!(ApiError::from(DbError::NotFound).status(), 404);
    }
}
