//! The `gcbb` tool: the local server, the migration tool's command line (`gcbb db`, over the
//! `gcbb-migrate` library), benchmarks, the cache tools and the local stand-ins for Upstash and
//! the model. None of it is linked into a function binary: this crate depends on the functions'
//! library, never the other way round.

pub mod bench;
pub mod cache;
pub mod db;
pub mod demo;
pub mod dev;
pub mod fault_proxy;
pub mod model_server;
pub mod session_token;
pub mod upstash_proxy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gcbb",
    version,
    about = "GCBB functions: local server and database tools"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve every route of vercel.json and public/ on http://localhost:3000.
    Dev(crate::dev::DevArgs),
    /// Migrations (Prisma-compatible): status, deploy, resolve, new, reset.
    Db(crate::db::DbArgs),
    /// Benchmarks: seed a realistic data set, measure the hot paths.
    Bench(crate::bench::BenchArgs),
    /// Serve the Upstash REST protocol over a real Redis (local tests and benchmarks).
    UpstashProxy(crate::upstash_proxy::ProxyArgs),
    /// Operate on the configured cache: clear PATTERN.
    Cache(crate::cache::CacheArgs),
}

pub async fn run(cli: Cli) -> ExitCode {
    gcbb::platform::telemetry::init();
    let code = match cli.command {
        Command::Dev(args) => crate::dev::run(args).await,
        Command::Db(args) => crate::db::run(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::UpstashProxy(args) => crate::upstash_proxy::run(args).await,
        Command::Cache(args) => crate::cache::run(args).await,
    };
    // Log lines are written by a thread of their own: none may be lost at exit.
    gcbb::platform::telemetry::flush();
    code
}
