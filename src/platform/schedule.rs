//! Calls the platform's scheduler makes itself. Vercel Cron is an HTTP client like any other and
//! proves itself with `CRON_SECRET`; an EventBridge schedule on AWS Lambda is no HTTP request at
//! all, and only principals allowed to invoke the function can send one, so the Lambda adapter
//! marks the request it makes from it, and a scheduled route takes the mark for the secret.

/// The mark of a scheduled invocation: a request extension, which only code in this process can
/// set (no header, query or body of a client's request becomes one).
#[derive(Debug, Clone)]
pub struct ScheduledInvocation {
    /// The schedule that fired (the EventBridge rule's ARN, when the event names one), for logs.
    pub schedule: Option<String>,
}
