//! GCBB's functions on AWS Lambda, through `lambda_http`: the same feature routers as the Vercel
//! functions (`api/*.rs`), behind an adapter of their own beside the Vercel one
//! (`gcbb::platform::runtime`). A crate apart, so the Vercel functions' build and dependency
//! tree don't change.
//!
//! | module | holds |
//! | --- | --- |
//! | [`function`] | the entry points a shim in `functions/` calls: [`serve_buffered`] and [`serve_streaming`] (function URLs in `RESPONSE_STREAM` mode), and the service that answers an invocation |
//! | [`request`] | a Lambda event as the feature's router sees it: `vercel.json`'s rewrites applied to the real path, the client's address from the event |
//! | [`invocation`] | background work (`wait_until`) tracked per invocation and awaited after the response, before the runtime asks for the next event |
//! | [`schedule`] | EventBridge schedules, delivered to the function `vercel.json`'s cron reaches |
//!
//! A shim is one line: `gcbb_lambda::serve_streaming(&gcbb::routes::CHAT_STREAM)`, naming the same
//! function (its name in `vercel.json`, its router) as its `api/*.rs` does.

pub mod function;
pub mod invocation;
pub mod request;
pub mod schedule;

pub use function::{serve_buffered, serve_streaming};
/// The error a function's `main` returns (the runtime's).
pub use lambda_http::Error;
