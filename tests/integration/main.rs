//! Integration tests against the real Postgres and Redis, and the real binaries.

mod cache;
mod dev_server;
mod health;
mod runtime;
mod support;
