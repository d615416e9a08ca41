//! Integration tests against the real Postgres and Redis.

mod common;
mod migrations;
