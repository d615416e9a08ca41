//! The function binaries as Vercel runs them: each `api/*.rs` process on `VERCEL_DEV_PORT`,
//! and the runtime adapter (streaming bodies, `wait_until`, draining on SIGTERM).

mod binaries;
mod health;
mod runtime;
