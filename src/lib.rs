//! GCBB functions: the shared library behind every `api/*.rs` function and the `gcbb` CLI.

pub mod ai_stream;
pub mod app;
pub mod auth;
pub mod bench;
pub mod cache;
pub mod chat;
pub mod cli;
pub mod companion;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod dev;
pub mod error;
pub mod group_chat;
pub mod health;
pub mod http;
pub mod lint;
pub mod llm;
pub mod migrate;
pub mod refresh;
pub mod routes;
pub mod runtime;
pub mod telemetry;
