//! `gcbb cache …`: operator commands on the configured cache.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use gcbb::cache::{Cache, SCAN_BATCH};
use gcbb::config::Config;

/// The `DATABASE_URL` placeholder used to read the cache settings: `gcbb cache` never touches
/// the database, so it must not require one.
const UNUSED_DATABASE_URL: &str = "postgres://unused@127.0.0.1:5432/unused";

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Delete every key matching a Redis glob (SCAN + DEL in batches), e.g. 'gcbb:v1:dashboard:*'.
    Clear {
        /// Redis glob pattern (quote it in the shell).
        pattern: String,
        /// Keys per SCAN step and per DEL.
        #[arg(long, default_value_t = SCAN_BATCH)]
        batch: usize,
    },
}

pub async fn run(args: CacheArgs) -> ExitCode {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    vars.entry("DATABASE_URL".to_owned())
        .or_insert_with(|| UNUSED_DATABASE_URL.to_owned());
    let config = match Config::from_vars(&vars) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gcbb cache: {e}");
            return ExitCode::from(2);
        }
    };
    let http = reqwest::Client::new();
    let cache = Cache::new(&config.cache, http, config.cache_timeout);
    match args.command {
        CacheCommand::Clear { pattern, batch } => {
            if pattern.trim().is_empty() {
                eprintln!("gcbb cache clear: the pattern is empty");
                return ExitCode::from(2);
            }
            if cache.backend_name() == "memory" {
                println!(
                    "no REDIS_URL or UPSTASH_REDIS_REST_URL set: the cache is in-process memory; nothing to clear"
                );
                return ExitCode::SUCCESS;
            }
            match cache.store().delete_matching(&pattern, batch.max(1)).await {
                Ok(n) => {
                    println!(
                        "deleted {n} keys matching {pattern} ({})",
                        cache.backend_name()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gcbb cache clear: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
