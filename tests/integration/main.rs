//! Integration tests against the real Postgres and Redis, and the real binaries.

mod auth;
mod cache;
mod common;
mod dashboard;
mod db;
mod dev_server;
mod drift;
mod health;
mod migrations;
mod runtime;
mod support;
mod tokens;
mod verify;
