//! The stand-in for Upstash, an outside service: a real `gcbb upstash-proxy` process, so it
//! runs as the process it is.

use crate::dev::gcbb_binary;
use crate::process::{binary, free_port, Server};
use crate::redis_url;

/// A `gcbb upstash-proxy` over the shared test Redis, accepting `token`.
pub async fn start_upstash_proxy(token: &str) -> Server {
    start_upstash_proxy_over(&redis_url(), token, &[]).await
}

/// A `gcbb upstash-proxy` over the Redis at `redis`, accepting `token`, with `flags` added
/// (`--allow-flush`, …).
pub async fn start_upstash_proxy_over(redis: &str, token: &str, flags: &[&str]) -> Server {
    let port = free_port();
    let mut cmd = binary(&gcbb_binary());
    cmd.args(["upstash-proxy", "--redis", redis, "--token", token])
        .args(["--port", &port.to_string()])
        .args(flags);
    Server::start(cmd, port).await
}
