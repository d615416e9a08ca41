//! GCBB functions: the shared library behind every `api/*.rs` function and the `gcbb` CLI.

pub mod ai_stream;
pub mod app;
pub mod auth;
pub mod cache;
pub mod chat;
pub mod companion;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod group_chat;
pub mod health;
pub mod http;
pub mod llm;
pub mod refresh;
pub mod routes;
pub mod runtime;
pub mod telemetry;
