//! A Lambda function: the process-wide [`App`] built from the environment as on Vercel, the
//! feature's router behind the same layers as on Vercel (`function_layers`), and the service
//! that answers each invocation through `lambda_http`: buffered ([`serve_buffered`]) or, for
//! function URLs in `RESPONSE_STREAM` mode, streamed frame by frame ([`serve_streaming`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::Response;
use axum::response::IntoResponse;
use axum::routing::MethodRouter;
use axum::Router;
use bytes::Bytes;
use gcbb::platform::app::App;
use gcbb::platform::cors::Cors;
use gcbb::platform::error::ApiError;
use gcbb::platform::routing::layered;
use gcbb::routes::{Rewrites, VercelJson};
use http_body::Frame;
use lambda_http::RequestExt;
use sync_wrapper::SyncWrapper;
use tower::ServiceExt;
use tracing::Instrument;

use crate::invocation::{FinishLayer, Invocations, TrackedBody};
use crate::request::{classify, route, Event};
use crate::schedule::{build_cron_request, find_cron_path, parse_schedule};

/// Serves `function` (its router, as its name in `vercel.json`), each response buffered:
/// function URLs in `BUFFERED` mode, API Gateway, and EventBridge schedules.
pub async fn serve_buffered(function: &gcbb::routes::Function) -> Result<(), lambda_http::Error> {
    let function = Function::from_env(function.name, function.router);
    let invocations = function.invocations.clone();
    let service = tower::service_fn(move |req: lambda_http::Request| {
        let function = function.clone();
        async move {
            let response = function.answer(req).await?;
            Ok::<_, lambda_http::Error>(response.map(BufferedBody::new))
        }
    });
    lambda_http::runtime(service)
        .layer(FinishLayer::new(invocations))
        .run()
        .await
}

/// Serves `router` as the Lambda function `function`, each response streamed as its body is
/// produced (function URLs in `RESPONSE_STREAM` mode): chat and group chat.
pub async fn serve_streaming(function: &gcbb::routes::Function) -> Result<(), lambda_http::Error> {
    let function = Function::from_env(function.name, function.router);
    let invocations = function.invocations.clone();
    let service = tower::service_fn(move |req: lambda_http::Request| {
        let function = function.clone();
        async move { function.answer(req).await }
    });
    lambda_http::streaming_runtime(service)
        .layer(FinishLayer::new(invocations))
        .run()
        .await
}

/// One function: its name, its router behind the platform's layers, and what routing needs.
#[derive(Clone)]
pub struct Function {
    name: &'static str,
    service: Router,
    /// The cron path that reaches this function, when one does: it takes schedules.
    cron_path: Option<String>,
    invocations: Invocations,
}

impl Function {
    /// Builds the process-wide state from the environment as the Vercel functions do, exiting
    /// with the variable's name on a configuration error.
    fn from_env(name: &'static str, router: fn(Arc<App>) -> MethodRouter) -> Function {
        gcbb::platform::telemetry::init();
        if let Err(e) = check_deployed_model(|name| std::env::var(name).ok()) {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
        let app = match App::from_env() {
            Ok(app) => app,
            Err(e) => {
                eprintln!("configuration error: {e}");
                std::process::exit(2);
            }
        };
        let cors = Cors::new(&app.config.cors);
        Function::new(name, router(app), cors)
    }

    /// `name`'s function around an already-built feature router, answering CORS as `cors` says.
    pub fn new(name: &'static str, feature: MethodRouter, cors: Cors) -> Function {
        let vercel = VercelJson::embedded();
        let rewrites = Arc::new(Rewrites::new(&vercel));
        let cron_path = find_cron_path(&vercel, &rewrites, name);
        // Inside `function_layers`, as on Vercel: a path this function doesn't serve is our JSON
        // 404 with a request span and `x-request-id`, like any other answer.
        let dispatch = tower::service_fn(move |req: Request| {
            let feature = feature.clone();
            let rewrites = rewrites.clone();
            async move {
                let Some(uri) = route(&rewrites, name, req.uri()) else {
                    return Ok(ApiError::RouteNotFound.into_response());
                };
                let (mut parts, body) = req.into_parts();
                parts.uri = uri;
                feature.oneshot(Request::from_parts(parts, body)).await
            }
        });
        Function {
            name,
            service: layered(Some(name), dispatch, cors),
            cron_path,
            invocations: Invocations::default(),
        }
    }

    /// Answers one invocation. An HTTP request gets the router's answer whatever its status, as
    /// on Vercel; a schedule gets the cron route's answer, and fails the invocation when that
    /// is not a success, so EventBridge retries it and the failure shows in the function's
    /// error metrics. Any other event fails the invocation.
    pub async fn answer(
        &self,
        req: lambda_http::Request,
    ) -> Result<Response<TrackedBody>, lambda_http::Error> {
        let request_id = req.lambda_context_ref().map(|c| c.request_id.clone());
        // The invocation's id on every line it logs, so they join Lambda's own (REPORT …).
        let span = tracing::info_span!(
            "invocation",
            aws_request_id = request_id.as_deref().unwrap_or("-")
        );
        self.answer_in(req, request_id).instrument(span).await
    }

    async fn answer_in(
        &self,
        req: lambda_http::Request,
        request_id: Option<String>,
    ) -> Result<Response<TrackedBody>, lambda_http::Error> {
        let tasks = self.invocations.tasks(request_id.as_deref());
        let (mut req, scheduled) = match classify(req) {
            Event::Http(req) => (*req, false),
            Event::Other(raw) => {
                let schedule = parse_schedule(&raw);
                match (schedule, &self.cron_path) {
                    (Some(schedule), Some(path)) => {
                        tracing::info!(
                            function = self.name,
                            schedule = schedule.schedule.as_deref().unwrap_or("-"),
                            "scheduled invocation"
                        );
                        (build_cron_request(path, schedule), true)
                    }
                    (Some(_), None) => {
                        return Err(format!(
                        "the function `{}` takes no schedules: no cron in vercel.json reaches it",
                        self.name
                    )
                        .into())
                    }
                    (None, _) => {
                        return Err(format!(
                            "the function `{}` answers HTTP requests (a function URL's) and \
                             EventBridge schedules, not this event",
                            self.name
                        )
                        .into())
                    }
                }
            }
        };
        req.extensions_mut().insert(tasks.clone());
        let Ok(response) = self.service.clone().oneshot(req).await;
        if scheduled && !response.status().is_success() {
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(format!(
                "the scheduled {} failed: {status} {}",
                self.name,
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        Ok(response.map(|body| TrackedBody::new(body, &tasks.0)))
    }
}

/// On AWS (`AWS_EXECUTION_ENV` is set there, not under an emulator) the same start-up rule as
/// on Vercel (`VERCEL_ENV`): the scripted model is refused and the model's key is required, so
/// a deployment never silently answers with a stand-in or fails its first chat instead of its
/// start.
pub fn check_deployed_model(var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if set("AWS_EXECUTION_ENV").is_none() || set("VERCEL_ENV").is_some() {
        return Ok(());
    }
    match set("LLM_PROVIDER").as_deref() {
        Some("scripted") => Err(
            "LLM_PROVIDER: the scripted model is for local development only (AWS_EXECUTION_ENV \
             is set)"
                .to_owned(),
        ),
        Some("openai") | None if set("OPENAI_API_KEY").is_none() => {
            Err("OPENAI_API_KEY is required".to_owned())
        }
        _ => Ok(()),
    }
}

/// A buffered response's body: `lambda_http` needs it `Sync` to collect it, which axum's body
/// is not. `SyncWrapper` is sound here: a body is only ever polled through `&mut`.
pub struct BufferedBody(SyncWrapper<TrackedBody>);

impl BufferedBody {
    fn new(body: TrackedBody) -> BufferedBody {
        BufferedBody(SyncWrapper::new(body))
    }
}

impl http_body::Body for BufferedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(self.get_mut().0.get_mut()).poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use gcbb::config::Config;
    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;

    /// A function of the real feature router over an app whose database refuses connections:
    /// what these tests check is answered before the database is needed, or is its absence.
    fn function(name: &'static str, router: fn(Arc<App>) -> MethodRouter) -> Function {
        let vars: HashMap<String, String> = [
            (
                "DATABASE_URL",
                "postgres://nobody@127.0.0.1:1/none?sslmode=disable",
            ),
            ("DB_CONNECT_TIMEOUT_MS", "500"),
            ("LLM_PROVIDER", "scripted"),
            ("CRON_SECRET", "cron-secret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let app = App::new(Config::from_vars(&vars).unwrap());
        let cors = Cors::new(&app.config.cors);
        Function::new(name, router(app), cors)
    }

    fn event(method: &str, path: &str, query: &str, headers: Value, body: Option<&str>) -> String {
        serde_json::json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": {
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9"},
                "requestId": "r1",
                "routeKey": "$default",
                "stage": "$default",
                "timeEpoch": 0
            },
            "body": body,
            "isBase64Encoded": false
        })
        .to_string()
    }

    fn lambda_request(event: &str) -> lambda_http::Request {
        let event: lambda_http::request::LambdaRequest = serde_json::from_str(event).unwrap();
        event.into()
    }

    async fn answer(function: &Function, event: &str) -> (u16, Value) {
        let response = function.answer(lambda_request(event)).await.unwrap();
        let status = response.status().as_u16();
        assert!(response.headers().contains_key("x-request-id"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn a_path_the_function_does_not_serve_is_our_json_404() {
        let chat = function("chat-stream", gcbb::chat::router);
        let get = event(
            "GET",
            "/api/dashboard/prefetch",
            "",
            serde_json::json!({}),
            None,
        );
        let (status, body) = answer(&chat, &get).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("route_not_found"))
        );
    }

    #[tokio::test]
    async fn the_chat_router_reads_its_id_from_the_real_path() {
        let chat = function("chat-stream", gcbb::chat::router);
        let json = serde_json::json!({"content-type": "application/json"});
        // A bad id in the path is the same 400 naming `chatId` as on Vercel...
        let post = event(
            "POST",
            "/api/chat/not.an.id",
            "",
            json.clone(),
            Some(r#"{"prompt":"hi"}"#),
        );
        let (status, body) = answer(&chat, &post).await;
        assert_eq!(
            (status, body["error"]["param"].as_str()),
            (400, Some("chatId"))
        );
        // ...and a good one gets past it, to the history's own refusal of anonymous viewers.
        let get = event("GET", "/api/chat/abc", "", json, None);
        let (status, _) = answer(&chat, &get).await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn the_refresh_over_http_still_needs_its_secret() {
        let refresh = function("cron-refresh", gcbb::refresh::router);
        let get = event("GET", "/api/cron/refresh", "", serde_json::json!({}), None);
        let (status, _) = answer(&refresh, &get).await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn a_schedule_runs_the_refresh_without_a_secret_and_fails_with_it() {
        let refresh = function("cron-refresh", gcbb::refresh::router);
        let schedule = r#"{"version":"0","id":"1","detail-type":"Scheduled Event","source":"aws.events","account":"1","time":"2026-11-28T23:00:00Z","region":"eu-west-1","resources":[],"detail":{}}"#;
        // Past the secret, to the database, which is down here: the invocation fails, so
        // EventBridge retries it.
        let err = refresh.answer(lambda_request(schedule)).await.unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
    }

    #[tokio::test]
    async fn a_function_no_cron_reaches_refuses_schedules_and_other_events() {
        let chat = function("chat-stream", gcbb::chat::router);
        let schedule = r#"{"version":"0","id":"1","detail-type":"Scheduled Event","source":"aws.events","account":"1","time":"2026-11-28T23:00:00Z","region":"eu-west-1","resources":[],"detail":{}}"#;
        let err = chat.answer(lambda_request(schedule)).await.unwrap_err();
        assert!(err.to_string().contains("takes no schedules"), "{err}");
        let err = chat
            .answer(lambda_request(r#"{"hello":1}"#))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not this event"), "{err}");
    }

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn on_aws_the_model_rules_of_vercel_apply() {
        let aws = ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023");
        assert!(check_deployed_model(vars(&[aws]))
            .unwrap_err()
            .contains("OPENAI_API_KEY"));
        assert!(
            check_deployed_model(vars(&[aws, ("LLM_PROVIDER", "scripted")]))
                .unwrap_err()
                .contains("LLM_PROVIDER")
        );
        assert!(check_deployed_model(vars(&[aws, ("OPENAI_API_KEY", "sk-1")])).is_ok());
        // Under an emulator, or locally: as gcbb dev.
        assert!(check_deployed_model(vars(&[("LLM_PROVIDER", "scripted")])).is_ok());
        assert!(check_deployed_model(vars(&[])).is_ok());
    }
}
