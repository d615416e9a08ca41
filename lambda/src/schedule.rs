//! EventBridge schedules: the cron of `vercel.json` on AWS.
//!
//! Vercel Cron calls `GET <path>` with `Authorization: Bearer $CRON_SECRET`. On Lambda an
//! EventBridge rule with a schedule expression invokes the function with a "Scheduled Event"
//! instead, which is no HTTP request. The function `vercel.json`'s cron path reaches (the
//! refresh) turns it into that same `GET <path>`, marked as scheduled
//! ([`ScheduledInvocation`]) in place of the secret: only principals allowed to invoke the
//! function (EventBridge, by its resource policy) can send an event that is not an HTTP
//! request, and no HTTP request can carry the mark.

use axum::body::Body;
use axum::http::{Method, Request, Uri};
use gcbb::platform::schedule::ScheduledInvocation;
use gcbb::routes::{Rewrites, VercelJson};
use serde::Deserialize;

/// The fields of an EventBridge event that tell a schedule.
#[derive(Deserialize)]
struct EventBridgeEvent {
    source: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    #[serde(default)]
    resources: Vec<String>,
}

/// The schedule an event is, if it is an EventBridge "Scheduled Event".
pub fn parse_schedule(raw: &[u8]) -> Option<ScheduledInvocation> {
    let event: EventBridgeEvent = serde_json::from_slice(raw).ok()?;
    (event.source == "aws.events" && event.detail_type == "Scheduled Event").then(|| {
        ScheduledInvocation {
            schedule: event.resources.into_iter().next(),
        }
    })
}

/// The path of the cron that reaches `function`, if one does (`/api/cron/refresh` for the
/// refresh); a function no cron reaches refuses schedules.
pub fn find_cron_path(vercel: &VercelJson, rewrites: &Rewrites, function: &str) -> Option<String> {
    vercel
        .crons
        .iter()
        .find(|cron| {
            cron.path.parse::<Uri>().is_ok_and(|uri| {
                rewrites
                    .resolve(&uri)
                    .is_some_and(|(name, _)| name == function)
            })
        })
        .map(|cron| cron.path.clone())
}

/// The request a schedule stands for: `GET <cron path>`, marked as scheduled.
pub fn build_cron_request(path: &str, schedule: ScheduledInvocation) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::empty())
        .expect("a cron path from vercel.json is a valid URI");
    req.extensions_mut().insert(schedule);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an EventBridge rule with a schedule expression sends, verbatim in shape.
    const SCHEDULED_EVENT: &str = r#"{
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-28T23:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/gcbb-cron-refresh"],
        "detail": {}
    }"#;

    #[test]
    fn a_scheduled_event_is_told_from_other_events() {
        let schedule = parse_schedule(SCHEDULED_EVENT.as_bytes()).unwrap();
        assert_eq!(
            schedule.schedule.as_deref(),
            Some("arn:aws:events:eu-west-1:123456789012:rule/gcbb-cron-refresh")
        );
        let other_event = SCHEDULED_EVENT.replace("Scheduled Event", "Object Created");
        assert!(parse_schedule(other_event.as_bytes()).is_none());
        let other_source = SCHEDULED_EVENT.replace("\"aws.events\"", "\"custom.app\"");
        assert!(parse_schedule(other_source.as_bytes()).is_none());
        assert!(parse_schedule(b"{}").is_none());
        assert!(parse_schedule(b"not json").is_none());
    }

    #[test]
    fn only_the_function_the_cron_reaches_takes_schedules() {
        let vercel = VercelJson::embedded();
        let rewrites = Rewrites::new(&vercel);
        assert_eq!(
            find_cron_path(&vercel, &rewrites, "cron-refresh").as_deref(),
            Some("/api/cron/refresh")
        );
        for function in gcbb::routes::FUNCTIONS
            .iter()
            .filter(|f| f.name != "cron-refresh")
        {
            assert_eq!(find_cron_path(&vercel, &rewrites, function.name), None);
        }
    }

    #[test]
    fn a_schedule_becomes_the_cron_request_marked_as_scheduled() {
        let schedule = parse_schedule(SCHEDULED_EVENT.as_bytes()).unwrap();
        let req = build_cron_request("/api/cron/refresh", schedule);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/api/cron/refresh");
        assert!(req.headers().get("authorization").is_none());
        assert!(req.extensions().get::<ScheduledInvocation>().is_some());
    }
}
