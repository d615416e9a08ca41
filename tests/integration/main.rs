//! Integration tests against the real Postgres and Redis, and the real binaries.

mod runtime;
mod support;
