//! Integration tests against the real Postgres and Redis, and the real binaries.

mod auth;
mod db;
mod dev_server;
mod health;
mod runtime;
mod support;
