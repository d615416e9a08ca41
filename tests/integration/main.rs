//! Integration tests against the real Postgres and Redis, and the real binaries.

mod auth;
mod bench;
mod cache;
mod chat;
mod common;
mod dashboard;
mod db;
mod dev_server;
mod drift;
mod group_chat;
mod input;
mod migrations;
mod model_server;
mod rehearse;
#[path = "../support/process.rs"]
mod support;
mod tokens;
mod upstash_proxy;
mod verify;
