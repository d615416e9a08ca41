//! The stand-in for Upstash, an outside service: a real `gcbb upstash-proxy` process, so it
//! runs as the process it is.

use serde_json::Value;

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

/// A `gcbb upstash-proxy` process with a random token of its own, and how to talk to it over
/// raw HTTP as Upstash's REST clients do.
pub struct UpstashProxy {
    pub server: Server,
    pub token: String,
    pub http: reqwest::Client,
}

impl UpstashProxy {
    /// In front of the Redis at `redis`, with `flags` added.
    pub async fn start(redis: &str, flags: &[&str]) -> UpstashProxy {
        let token = format!("{:032x}", rand::random::<u128>());
        UpstashProxy {
            server: start_upstash_proxy_over(redis, &token, flags).await,
            token,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// POSTs a JSON body with the bearer token: the status and the JSON reply.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        answer(self.http.post(self.url(path)).json(&body), &self.token).await
    }

    /// As [`UpstashProxy::post`], with `Upstash-Encoding: base64`.
    pub async fn post_base64(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self
            .http
            .post(self.url(path))
            .header("Upstash-Encoding", "base64")
            .json(&body);
        answer(request, &self.token).await
    }

    /// A path-style request with the bearer token.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.http.get(self.url(path)), &self.token).await
    }
}

async fn answer(request: reqwest::RequestBuilder, token: &str) -> (u16, Value) {
    let resp = request
        .bearer_auth(token)
        .send()
        .await
        .expect("the proxy answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON reply"))
}
