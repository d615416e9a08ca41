//! The HTTP platform every feature stands on: the process's shared state, the Vercel runtime
//! adapter and background work, scheduled invocations, routing helpers, CORS, the one error
//! type, request parsing, auth, who the client is, rate limiting, request telemetry, and what guards privacy across
//! instances (the epoch, the purge outbox). Nothing here knows a feature.

pub mod app;
pub mod auth;
pub mod background;
pub mod client;
pub mod cors;
pub mod error;
pub mod http;
pub mod input;
pub mod log_format;
pub mod outbox;
pub mod privacy;
pub mod ratelimit;
pub mod routing;
pub mod runtime;
pub mod schedule;
pub mod telemetry;
