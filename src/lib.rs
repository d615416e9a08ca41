//! GCBB functions: the library behind every `api/*.rs` function (and the `gcbb` tool in `cli/`).
//!
//! The crate is layered; each layer imports only from the layers below it, never up:
//!
//! | layer | modules | holds |
//! | --- | --- | --- |
//! | functions | [`routes`] | every `api/*.rs` function with its feature's router, and `vercel.json`'s rewrites for the local server |
//! | features | [`health`], [`dashboard`], [`chat`] (with [`chat::group`]), [`companion`], [`refresh`] | one folder each; each owns its router and its handlers |
//! | platform | [`platform`] | the Vercel runtime adapter, background work, routing helpers, CORS, the one error type, request parsing, auth, telemetry, the process's shared state |
//! | infrastructure | [`db`], [`cache`], [`cdn`], [`llm`], [`config`], [`ip`], [`id`] | Postgres queries beside their SQL, the cache backends, CDN tags and purges, the model client, configuration from the environment, IP ranges, the typed ids of rows |
//!
//! A shim in `api/` is one line: `gcbb::platform::runtime::serve(&gcbb::routes::CHAT_STREAM)`.

pub mod routes;

pub mod chat;
pub mod companion;
pub mod dashboard;
pub mod health;
pub mod refresh;

pub mod platform;

pub mod breaker;
pub mod cache;
pub mod cdn;
pub mod config;
pub mod db;
pub mod id;
pub mod ip;
pub mod llm;
