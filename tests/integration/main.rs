//! Integration tests against the real Postgres and Redis, and the real binaries.

mod auth;
mod dev_server;
mod health;
mod runtime;
mod support;
