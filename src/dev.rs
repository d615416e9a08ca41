//! `gcbb dev`: the local server for every route. STUB.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = crate::config::DEFAULT_DEV_PORT)]
    pub port: u16,
}

pub async fn run(_args: DevArgs) -> ExitCode {
    ExitCode::FAILURE
}
