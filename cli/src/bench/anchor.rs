//! `gcbb bench anchor`: the minimal server `bench http --anchor` measures against. It fetches
//! the page under test once (twice: the second answer is the warm one), then answers every
//! request with those bytes and headers through plain axum on hyper: no router of ours, no
//! layers, no log line, no work. It runs as a process of its own, as the server under test
//! does, so the share `bench http` states is what our whole serving stack costs against what
//! this machine can do at all for the same response.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderName};
use axum::Router;
use bytes::Bytes;

#[derive(Debug, clap::Args)]
pub struct AnchorArgs {
    /// The page whose bytes and headers to serve (loopback).
    #[arg(long)]
    pub copy_from: String,
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    pub port: u16,
}

/// Headers of the copied response that describe one connection or one request, not the page.
const PER_RESPONSE: [&str; 4] = ["date", "connection", "transfer-encoding", "content-length"];

pub async fn run(args: &AnchorArgs) -> anyhow::Result<()> {
    let (headers, body) = copy_page(&args.copy_from).await?;
    let app = Router::new().fallback(move || {
        let (headers, body) = (headers.clone(), body.clone());
        async move { (headers, body) }
    });
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    println!("anchor listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// The page's headers (less those of one response) and body, as its server answers them warm.
async fn copy_page(url: &str) -> anyhow::Result<(HeaderMap, Bytes)> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    client.get(url).send().await?.error_for_status()?;
    let response = client.get(url).send().await?.error_for_status()?;
    let mut headers = response.headers().clone();
    for name in PER_RESPONSE {
        headers.remove(HeaderName::from_static(name));
    }
    Ok((headers, response.bytes().await?))
}
