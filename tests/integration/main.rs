//! Integration tests against the real Postgres and Redis, and the real binaries.

mod ai_sdk;
mod auth;
mod bench;
mod cache;
mod chat;
mod chat_request;
mod common;
mod cors;
mod dashboard;
mod db;
mod dev_hardening;
mod dev_server;
mod drift;
mod fast_path;
mod front_end;
mod group_chat;
mod hardening;
mod input;
mod migrations;
mod model_server;
mod privacy;
mod rehearse;
mod resilience;
mod resume;
mod revert;
/// The process helpers of `gcbb-test-support`, under the name the tests import them by.
mod support {
    pub use gcbb_test_support::process::*;
}
mod tokens;
mod upstash_proxy;
mod verify;
