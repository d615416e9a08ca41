//! `gcbb cache …`: operator commands on the configured cache.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use gcbb::cache::{Cache, SCAN_BATCH};
use gcbb::config::Config;

/// Above this many matching keys, `clear` asks first (or needs `--yes`).
pub const CONFIRM_ABOVE_KEYS: usize = 5_000;

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
    /// The pattern must stay inside the configured key prefix (CACHE_KEY_PREFIX) unless
    /// --all-keys; over a few thousand keys it asks first (or needs --yes).
    Clear {
        /// Redis glob pattern (quote it in the shell).
        pattern: String,
        /// Keys per SCAN step and per DEL.
        #[arg(long, default_value_t = SCAN_BATCH)]
        batch: usize,
        /// Allow a pattern outside the configured key prefix (other applications' keys too).
        #[arg(long)]
        all_keys: bool,
        /// Don't ask before deleting more than a few thousand keys.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(args: CacheArgs) -> ExitCode {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    let set = |name: &str| vars.get(name).is_some_and(|v| !v.trim().is_empty());
    if !set("DATABASE_URL") && !set("CACHE_KEY_PREFIX") {
        eprintln!(
            "gcbb cache: the deployment's keys start with a prefix scoped to its database: set \
             DATABASE_URL as the deployment has it (or CACHE_KEY_PREFIX when it sets one)"
        );
        return ExitCode::from(2);
    }
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
    let cache = Cache::new(&config.cache, http, config.cache_timeout)
        .with_namespace(&config.cache_key_prefix);
    // The first segment keys really carry (the prefix as the key space spells it).
    let prefix = cache.keyspace().prefix().to_owned();
    match args.command {
        CacheCommand::Clear {
            pattern,
            batch,
            all_keys,
            yes,
        } => {
            if pattern.trim().is_empty() {
                eprintln!("gcbb cache clear: the pattern is empty");
                return ExitCode::from(2);
            }
            if !all_keys && !within_prefix(&pattern, &prefix) {
                eprintln!(
                    "gcbb cache clear: refusing `{pattern}`: it can match keys outside this \
                     deployment's prefix `{prefix}:` (CACHE_KEY_PREFIX), other applications' keys \
                     too. Start the pattern with `{prefix}:` (e.g. '{prefix}:v1:dashboard:*'), or \
                     pass --all-keys to mean it."
                );
                return ExitCode::from(2);
            }
            if cache.backend_name() == "memory" {
                println!(
                    "no REDIS_URL or UPSTASH_REDIS_REST_URL set: the cache is in-process memory; nothing to clear"
                );
                return ExitCode::SUCCESS;
            }
            let batch = batch.max(1);
            let matching = match cache.store().scan(&pattern, batch).await {
                Ok(keys) => keys.len(),
                Err(e) => {
                    eprintln!("gcbb cache clear: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if matching > CONFIRM_ABOVE_KEYS && !yes && !confirm(matching, &pattern) {
                eprintln!(
                    "gcbb cache clear: {matching} keys match `{pattern}`; nothing deleted \
                     (pass --yes to delete more than {CONFIRM_ABOVE_KEYS} keys without asking)"
                );
                return ExitCode::from(2);
            }
            match cache.store().delete_matching(&pattern, batch).await {
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

/// Whether every key `pattern` can match starts with `prefix:`: the pattern begins with
/// `prefix:` literally, with no glob character (`*`, `?`, `[`, `\`) before the colon.
pub fn within_prefix(pattern: &str, prefix: &str) -> bool {
    let literal = format!("{prefix}:");
    !prefix.is_empty() && !prefix.contains(['*', '?', '[', '\\']) && pattern.starts_with(&literal)
}

/// Asks on the terminal; false without one (a script must say `--yes`).
fn confirm(matching: usize, pattern: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    print!("Delete {matching} keys matching {pattern}? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::within_prefix;

    #[test]
    fn only_patterns_that_start_with_the_prefix_and_a_colon_stay_inside_it() {
        assert!(within_prefix("gcbb:v1:dashboard:*", "gcbb"));
        assert!(within_prefix("gcbb:*", "gcbb"));
        assert!(!within_prefix("*", "gcbb"));
        assert!(!within_prefix("gcbb*", "gcbb"));
        assert!(!within_prefix("gcb?:*", "gcbb"));
        assert!(!within_prefix("[g]cbb:*", "gcbb"));
        assert!(!within_prefix("gcbbother:*", "gcbb"));
    }
}
