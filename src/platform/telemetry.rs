//! Logging set-up: `tracing` with fields, filtered by `RUST_LOG`.
//!
//! The filter is `tracing_subscriber`'s `Targets` (`warn,gcbb=info` syntax) rather than
//! `EnvFilter`: the functions need no span-field filters, and `EnvFilter` links a regex engine
//! into every function binary.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Default filter when `RUST_LOG` is unset: our own crates at info, libraries at warn.
pub const DEFAULT_LOG_FILTER: &str = "warn,gcbb=info,gcbb_cli=info";

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
///
/// Colour codes only when stderr is a terminal, so logs captured to a file stay plain text.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| Targets::from_str(&v).ok())
        .unwrap_or_else(|| {
            Targets::from_str(DEFAULT_LOG_FILTER).expect("the default filter parses")
        });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}
