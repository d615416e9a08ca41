//! The `gcbb` CLI.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gcbb::cli::run(gcbb::cli::Cli::parse()).await
}
