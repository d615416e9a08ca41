//! The `gcbb` CLI.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gcbb_cli::run(gcbb_cli::Cli::parse()).await
}
