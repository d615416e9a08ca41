//! Logging set-up: `tracing` with fields, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Default filter when `RUST_LOG` is unset: our own crate at info, libraries at warn.
pub const DEFAULT_LOG_FILTER: &str = "warn,gcbb=info";

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
