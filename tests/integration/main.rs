//! Integration tests against the real Postgres and Redis.
mod db;
