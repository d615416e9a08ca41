//! Integration tests against the real Postgres and Redis, and the real binaries.

mod auth;
mod common;
mod db;
mod dev_server;
mod drift;
mod health;
mod migrations;
mod runtime;
mod support;
mod verify;
